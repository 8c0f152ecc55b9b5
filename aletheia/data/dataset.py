"""From prepared face crops to training batches: group-wise splits, balanced sampling, a torch Dataset."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


def split_by_group(faces: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic train/validation split in which every group (video, identity) lies wholly on one side.

    A group's side depends only on its name and the seed (a hash), so adding data never moves existing groups.
    """

    def bucket(group: str) -> float:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    is_val = faces["group"].astype(str).map(bucket) < val_fraction
    return faces[~is_val].reset_index(drop=True), faces[is_val].reset_index(drop=True)


def epoch_indices(
    labels: np.ndarray, balance: str, epoch: int, seed: int, length: int | None = None
) -> np.ndarray:
    """The sample order for one epoch. `sampler` draws real and fake equally often (with replacement for the
    smaller class), so the loss is not dominated by the larger class; `none` is a plain shuffle."""
    rng = np.random.default_rng([seed, epoch])
    n = len(labels) if length is None else length
    if balance == "none":
        return rng.permutation(len(labels))[:n]
    weights = np.where(labels == 1, 0.5 / max(1, (labels == 1).sum()), 0.5 / max(1, (labels == 0).sum()))
    return rng.choice(len(labels), size=n, replace=True, p=weights / weights.sum())


class FaceCropDataset(Dataset):
    """Cached crops (RGB uint8, already model-sized) with labels 1 = fake; augmentation optional."""

    def __init__(self, faces: pd.DataFrame, augment=None) -> None:
        self.paths = faces["crop"].tolist()
        self.labels = (faces["label"] == "fake").to_numpy(dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = cv2.imread(self.paths[index], cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read cached crop {self.paths[index]}: re-run `aletheia prepare`")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), int(self.labels[index])
