"""Evaluate a checkpoint on prepared faces: scores through the pipeline's own classifier path, then the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from aletheia.data.dataset import split_by_group
from aletheia.data.prepare import load_faces
from aletheia.evaluation import evaluation_report
from aletheia.training.config import TrainConfig
from aletheia.tta import DEFAULT_TTA


def select_faces(data: list[str], split: str, run_dir: str | None) -> pd.DataFrame:
    """`all` faces, or the `val` split of a training run (same seed and fraction as that run, read from its config)."""
    faces = pd.concat([load_faces(d) for d in data], ignore_index=True)
    if split == "all":
        return faces
    if split != "val":
        raise ValueError(f"split must be 'val' or 'all', got {split!r}")
    if run_dir is None:
        raise ValueError("split 'val' needs the training run folder (its config fixes the split)")
    config = TrainConfig.from_yaml(Path(run_dir) / "config.yaml")
    return split_by_group(faces, config.val_fraction, config.seed)[1]


def score_faces(
    checkpoint: str, faces: pd.DataFrame, batch_size: int = 32, backend: str = "auto", tta: str = DEFAULT_TTA
) -> np.ndarray:
    """Logits for cached crops, normalised, augmented and run exactly as `DeepfakeDetectorPipeline` does at
    inference (with test-time augmentation `tta`)."""
    return score_faces_with_spread(checkpoint, faces, batch_size, backend, tta)[0]


def score_faces_with_spread(
    checkpoint: str, faces: pd.DataFrame, batch_size: int = 32, backend: str = "auto", tta: str = DEFAULT_TTA
) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, spread of each face's probability across the augmented views, None without augmentation).
    `checkpoint`: any model spec (aletheia.models.spec)."""
    import cv2

    from aletheia.pipeline import DeepfakeDetectorPipeline

    pipeline = DeepfakeDetectorPipeline(checkpoint, batch_size=batch_size, backend=backend, tta=tta)
    logits, spreads = [], []
    for start in tqdm(range(0, len(faces), batch_size), desc="evaluate", unit="batch"):
        paths = faces["crop"].iloc[start : start + batch_size]
        crops = np.stack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths])
        answer = pipeline.classify(crops)
        logits.append(answer.logits)
        if answer.spread is not None:
            spreads.append(answer.spread)
    if not logits:
        return np.zeros(0), None
    return np.concatenate(logits), (np.concatenate(spreads) if spreads else None)


def evaluate_prepared(checkpoint: str, data: list[str], output: str, split: str = "val", threshold: float | None = None,
                      run_dir: str | None = None, batch_size: int = 32) -> dict:  # fmt: skip
    faces = select_faces(data, split, run_dir)
    if faces.empty:
        raise ValueError("no faces to evaluate")
    logits = score_faces(checkpoint, faces, batch_size)
    table = faces.assign(
        label=(faces["label"] == "fake").astype(int),
        logit=logits,
        score=1.0 / (1.0 + np.exp(-logits)),
        video=faces["path"],  # frames of one video (or one image) aggregate to one row
    )
    Path(output).mkdir(parents=True, exist_ok=True)
    table.drop(columns=["crop"]).to_csv(Path(output) / "scores.csv", index=False)
    return evaluation_report(
        table,
        output,
        threshold=0.5 if threshold is None else threshold,
        title=f"Evaluation of {Path(checkpoint).name}",
    )
