"""Calibrate a trained checkpoint on its run's validation split and store the result with the weights.

The crop margin stored is the one the training and validation crops were cut at, so that every threshold and band
fitted here holds for the faces inference cuts. (Until v8 it was a tighter margin meant to frame faces in whole photos
like pre-cropped training faces; once the training mix held whole-picture sources, that cost more than it gave: v8
through the pipeline at 0.04 against 0.2 flagged 9.0% against 1.5% of 67 whole real photos and 9.9% against 4.0% of
FFHQ's real faces, and scored InSwapper 0.63 against 0.91: weights/reports/v11-crop-margin.md.)
Temperature scaling makes probabilities mean what they say, fit with both classes weighing the same (the model is
trained on balanced draws, and the validation split's own share of fakes says nothing about a user's photos). The
decision threshold is the lowest that flags at most `target_fpr` of the validation faces of *every* real source
(not of all reals pooled, where the biggest source would set it alone). Both travel inside the checkpoint, so every
interface that loads it (API, CLI, web app) uses them.

The inconclusive band is the narrowest (fewest validation faces inside it) around the threshold that leaves at least
`band_accuracy` of the faces outside it right, each class weighing alike (balanced accuracy). All of it is fitted on
scores made with the test-time augmentation inference uses (`tta`), recorded in the checkpoint beside them.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from aletheia.evaluation import (
    binary_metrics,
    expected_calibration_error,
    temperature_scale,
    threshold_at_fpr,
)
from aletheia.models.checkpoints import read_checkpoint
from aletheia.models.preprocessing import Preprocessing
from aletheia.models.spec import CheckpointError, resolve_model_spec
from aletheia.results import DEFAULT_MAX_SPREAD
from aletheia.training.config import TrainConfig
from aletheia.training.evaluate import score_faces_with_spread
from aletheia.training.loop import load_training_faces
from aletheia.tta import DEFAULT_TTA, check_mode

# Candidate band edges tried on each side of the threshold (quantiles of the validation scores there).
BAND_CANDIDATES = 400


def choose_band(
    scores: np.ndarray, labels: np.ndarray, threshold: float, target: float = 0.95, min_decided: float = 0.5
) -> dict:
    """The narrowest band (low, high) around `threshold` such that the faces outside it (score < low called real,
    score >= high called fake) are right at least `target` of the time, each class weighing alike.

    When no band reaches the target, the one with the best balanced accuracy that still decides `min_decided` of the
    faces is returned, with `target_met` false. Returns the band and its figures on these faces.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    real, fake = np.sort(scores[labels == 0]), np.sort(scores[labels == 1])

    def edges(side: np.ndarray) -> np.ndarray:
        picks = np.quantile(side, np.linspace(0, 1, BAND_CANDIDATES)) if len(side) else np.zeros(0)
        return np.unique(np.concatenate([[threshold], picks]))

    lows = edges(scores[scores <= threshold])
    highs = edges(scores[scores >= threshold])
    real_below = np.searchsorted(real, lows, side="left")[:, None]  # right: called real
    fake_below = np.searchsorted(fake, lows, side="left")[:, None]  # wrong
    fake_above = (len(fake) - np.searchsorted(fake, highs, side="left"))[None, :]  # right: called fake
    real_above = (len(real) - np.searchsorted(real, highs, side="left"))[None, :]  # wrong
    with np.errstate(invalid="ignore", divide="ignore"):
        reals_out, fakes_out = real_below + real_above, fake_below + fake_above
        balanced = 0.5 * (real_below / reals_out + fake_above / fakes_out)
    decided = (reals_out + fakes_out) / max(1, len(scores))
    balanced = np.where((reals_out > 0) & (fakes_out > 0), balanced, -1.0)
    feasible = balanced >= target
    target_met = bool(feasible.any())
    if target_met:  # fewest inside; among those, the most accurate
        key = np.where(feasible, decided + 1e-9 * balanced, -np.inf)
    else:
        key = np.where(decided >= min_decided, balanced, -np.inf)
    i, j = np.unravel_index(int(np.argmax(key)), key.shape)
    right = int(real_below[i, 0] + fake_above[0, j])
    outside = int(reals_out[i, j] + fakes_out[i, j])
    return {
        "band": (float(lows[i]), float(highs[j])),
        "target_accuracy": target,
        "target_met": target_met,
        "share_inconclusive": float(1.0 - decided[i, j]),
        "balanced_accuracy_outside": float(balanced[i, j]),
        "accuracy_outside": right / outside if outside else float("nan"),
    }


def calibrate(
    checkpoint: str | Path,
    run_dir: str | Path,
    output: str | Path,
    target_fpr: float = 0.05,
    *,
    tta: str = DEFAULT_TTA,
    band_accuracy: float = 0.95,
    max_spread: float = DEFAULT_MAX_SPREAD,
    half_precision: bool = False,
) -> dict:
    """Fit temperature, threshold, band and crop margin on `run_dir`'s validation split; write them with the weights
    to `output`. `half_precision`: the weights are rounded to float16 first (a file half the size, loaded into the
    float model as it is) and calibrated as rounded, so the stored calibration is that of the weights as they ship."""
    checkpoint = _checkpoint_file(checkpoint)
    state, metadata = read_checkpoint(checkpoint)
    if half_precision:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config = TrainConfig.from_yaml(Path(run_dir) / "config.yaml")
    _, val = load_training_faces(config)
    crop_margin = float(metadata.get("preprocessing", {}).get("margin", Preprocessing.margin))
    check_mode(tta)
    with tempfile.TemporaryDirectory() as scratch:
        if half_precision:  # scored as they will ship
            checkpoint = Path(scratch) / checkpoint.name
            torch.save({"net": state, **metadata}, checkpoint)
        logits, spread = score_faces_with_spread(str(checkpoint), val, backend="onnx", tta=tta)
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
    # The band is chosen on the probabilities users see: rounded to 3 decimals, outward.
    chosen = choose_band(scores, labels, threshold, band_accuracy)
    low, high = chosen["band"]
    band = (min(threshold, math.floor(low * 1000) / 1000), max(threshold, math.ceil(high * 1000) / 1000))
    inside = (scores >= band[0]) & (scores < band[1])
    unstable = spread > max_spread if spread is not None else np.zeros(len(scores), dtype=bool)
    decided = ~(inside | unstable)
    verdicts = {
        "band": list(band),
        "tta": tta,
        "max_spread": max_spread,
        "target_balanced_accuracy": band_accuracy,
        "target_met": chosen["target_met"],
        "share_in_band": float(inside.mean()),
        "share_unstable": float(unstable.mean()),
        "share_inconclusive": float(1.0 - decided.mean()),
        "accuracy_outside": float(((scores >= threshold) == labels)[decided].mean())
        if decided.any()
        else None,
        "balanced_accuracy_outside": _balanced(labels[decided], scores[decided] >= threshold),
        "median_spread": None if spread is None else float(np.median(spread)),
    }
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
        "verdicts": verdicts,
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": state, "architecture": metadata.get("architecture", config.model), "temperature": float(temperature),
                "threshold": float(threshold), "crop_margin": crop_margin, "band": band, "max_spread": max_spread,
                "tta": tta, "calibration": summary,
                **({"preprocessing": metadata["preprocessing"]} if "preprocessing" in metadata else {})}, output)  # fmt: skip
    return summary


def _checkpoint_file(spec: str | Path) -> Path:
    """The weights file a model spec names (aletheia.models.spec): calibration rewrites a checkpoint."""
    resolved = resolve_model_spec(spec)
    if resolved.checkpoint is None or not resolved.checkpoint.is_file():
        raise CheckpointError(f"{spec}: calibration needs a checkpoint file (.pth) to read and rewrite")
    return resolved.checkpoint


def _balanced(labels: np.ndarray, called_fake: np.ndarray) -> float | None:
    if not (labels == 0).any() or not (labels == 1).any():
        return None
    return float(0.5 * ((~called_fake)[labels == 0].mean() + called_fake[labels == 1].mean()))
