"""Training augmentation (ISPL's set, albumentations 2.0.8) and a preview grid to see what the network sees.

Crops arrive already cut by `crop_face` at the model's input size; augmentation never re-crops, so training sees
faces framed exactly as inference does. Normalisation is not done here: the model's config owns it (`to_tensor`).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from aletheia.models.preprocessing import normalise  # noqa: E402


def training_augmentation(
    strength: float = 1.0, equalise_quality: bool = False, crop_jitter: float = 0.0
) -> A.Compose:
    """Flip; brightness/contrast or hue/saturation/value; ISO or Gaussian noise; downscale 0.7-0.9; JPEG 50-99.

    `strength` scales every probability (0 disables augmentation), so a grid search can tune it.
    `equalise_quality` moves every crop, real and fake alike, to a random point of a common quality range (resampled
    to 35-70%, blurred or sharpened, then JPEG 60-95), so sources that differ in resolution, sharpness or compression
    cannot be told apart by those alone: the dev data's real faces are all soft and its only sharp faces are
    StyleGAN3 fakes, so without this a sharp real photo reads as fake.
    `crop_jitter` (a fraction of the crop, e.g. 0.03) shifts, scales and turns half the crops a little, as the face
    detector's boxes vary between photos, frames and re-encodings: a model trained only on exactly framed crops moved
    one face's score from 0.72 to 0.95 for a one-pixel shift of its crop.
    """
    p = float(np.clip(strength, 0.0, 1.0))
    natural_resampling = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
    equalise = [
        A.OneOf(
            [
                A.Downscale(scale_range=(0.35, 0.7), interpolation_pair=natural_resampling),
                A.GaussianBlur(sigma_limit=(0.5, 1.5)),
                A.Sharpen(alpha=(0.2, 0.5), lightness=(0.9, 1.1)),
            ],
            p=0.9,
        ),
        A.ImageCompression(quality_range=(60, 95), p=1.0),
    ]
    jitter = [
        A.Affine(
            translate_percent=(-crop_jitter, crop_jitter),
            scale=(1.0 - crop_jitter, 1.0 + crop_jitter),
            rotate=(-150.0 * crop_jitter, 150.0 * crop_jitter),  # 0.03: +-4.5 degrees
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.5 * p,
        )
    ]
    return A.Compose(
        [
            *(jitter if crop_jitter > 0 else []),
            A.HorizontalFlip(p=0.5 * p),
            A.OneOf([A.RandomBrightnessContrast(), A.HueSaturationValue()], p=0.5 * p),
            A.OneOf([A.ISONoise(), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3 * p),
            A.Downscale(scale_range=(0.7, 0.9), p=0.3 * p),
            A.ImageCompression(quality_range=(50, 99), p=0.5 * p),
            *(equalise if equalise_quality else []),
        ]
    )


def to_tensor(crops: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(n, h, w, 3) uint8 RGB -> normalised float (n, 3, h, w): the pipeline's own normalisation (one owner)."""
    return torch.from_numpy(normalise(crops, mean, std))


def preview_grid(
    crops: list[np.ndarray], out_path: str | Path, augment: A.Compose, columns: int = 6, seed: int = 0
) -> Path:
    """Each row: an original crop followed by `columns - 1` augmented versions of it, saved as one PNG."""
    augment.set_random_seed(seed)
    rows = []
    for crop in crops:
        row = [crop] + [augment(image=crop)["image"] for _ in range(columns - 1)]
        rows.append(np.concatenate(row, axis=1))
    grid = np.concatenate(rows, axis=0)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out_path)
    return out_path
