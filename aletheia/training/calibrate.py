"""Calibrate a trained checkpoint on its run's validation split and store the result with the weights.

The crop margin is the one that frames faces in whole photos as the training crops framed theirs
(`matching_margin`): pre-cropped face datasets give tighter crops than a photo does at the same margin.
Temperature scaling makes probabilities mean what they say, fit with both classes weighing the same (the model is
trained on balanced draws, and the validation split's own share of fakes says nothing about a user's photos). The
decision threshold is the lowest that flags at most `target_fpr` of the validation faces of *every* real source
(not of all reals pooled, where the biggest source would set it alone). Both travel inside the checkpoint, so every
interface that loads it (API, CLI, web app) uses them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from aletheia.data.dataset import FaceCropDataset
from aletheia.evaluation import (
    binary_metrics,
    expected_calibration_error,
    temperature_scale,
    threshold_at_fpr,
)
from aletheia.faces.extract import matching_margin
from aletheia.models.checkpoints import read_checkpoint
from aletheia.training.config import TrainConfig
from aletheia.training.evaluate import score_faces
from aletheia.training.loop import load_training_faces, trained_groups


def calibrate(
    checkpoint: str | Path, run_dir: str | Path, output: str | Path, target_fpr: float = 0.05
) -> dict:
    config = TrainConfig.from_yaml(Path(run_dir) / "config.yaml")
    train, val = load_training_faces(config)
    train_set = FaceCropDataset(train)
    drawn = np.isin(train_set.groups, list(trained_groups(train_set, config.balance)))
    trained = train[drawn & (train["face_policy"] == "scale").to_numpy()]
    crop_margin = matching_margin(
        trained[["x0", "y0", "x1", "y1"]].to_numpy(), trained[["height", "width"]].to_numpy()
    )
    logits = score_faces(str(checkpoint), val, backend="onnx")
    labels = (val["label"] == "fake").to_numpy(dtype=int)
    temperature = temperature_scale(logits, labels, balanced=True)
    scores = 1.0 / (1.0 + np.exp(-logits / temperature))
    real_sources = val.loc[labels == 0, "source"].to_numpy()
    per_source = {
        source: threshold_at_fpr(scores[labels == 0][real_sources == source], target_fpr)
        for source in np.unique(real_sources)
    }
    # Rounded up to 3 decimals, so the number people see (web app, JSON) is the one applied and no more are flagged.
    threshold = math.ceil(max(per_source.values()) * 1000) / 1000
    state, metadata = read_checkpoint(checkpoint)
    summary = {
        "temperature": float(temperature),
        "threshold": float(threshold),
        "crop_margin": crop_margin,
        "threshold_by_real_source": {k: float(v) for k, v in per_source.items()},
        "target_fpr": target_fpr,
        "validation_faces": int(len(val)),
        "balanced_ece_before": expected_calibration_error(
            labels, 1.0 / (1.0 + np.exp(-logits)), balanced=True
        ),
        "balanced_ece_after": expected_calibration_error(labels, scores, balanced=True),
        "at_threshold": binary_metrics(labels, scores, threshold),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": state, "architecture": metadata.get("architecture", config.model), "temperature": float(temperature),
                "threshold": float(threshold), "crop_margin": crop_margin, "calibration": summary,
                **({"preprocessing": metadata["preprocessing"]} if "preprocessing" in metadata else {})}, output)  # fmt: skip
    return summary
