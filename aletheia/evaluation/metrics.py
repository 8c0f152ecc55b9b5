"""Metrics and calibration for a binary deepfake detector: pure functions over arrays and DataFrames.

Conventions: see aletheia.evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit
from scipy.special import logit as _logit
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] for log-loss and logits
_MISSING = "(none)"  # shown for rows whose group column is empty (e.g. the method of a real video)


def as_labels(labels: Any) -> np.ndarray:
    """0/1 integer labels from 0/1, booleans or "real"/"fake" (any case); anything else is an error."""
    values = pd.Series(np.asarray(labels).ravel())
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        text = values.astype(str).str.strip().str.lower()
        mapped = text.map({"real": 0, "fake": 1, "0": 0, "1": 1})
        bad = sorted(set(values[mapped.isna()].astype(str)))
    else:
        mapped = values.astype(float)
        bad = sorted({str(v) for v in values[~mapped.isin([0.0, 1.0])]})
    if bad:
        raise ValueError(f"labels must be 0/1 or 'real'/'fake'; got {bad[:5]}")
    return mapped.to_numpy(dtype=np.int64)


def _as_scores(scores: Any, n: int) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).ravel()
    if array.shape[0] != n:
        raise ValueError(f"{n} labels but {array.shape[0]} scores")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(array)))} non-finite values")
    return array


def scores_of(df: pd.DataFrame) -> np.ndarray:
    """The ``score`` column, or sigmoid(``logit``) when only logits are there."""
    if "score" in df:
        return df["score"].to_numpy(dtype=np.float64)
    if "logit" in df:
        return expit(df["logit"].to_numpy(dtype=np.float64))
    raise ValueError(f"need a 'score' or 'logit' column; columns are {list(df.columns)}")


def equal_error_rate(labels: Any, scores: Any) -> tuple[float | None, float | None]:
    """(EER, threshold): the point on the ROC where FPR = FNR, linearly interpolated between ROC vertices.

    Interpolating matters on small or tied sets, where no threshold makes the two rates equal exactly.
    None, None when only one class is present.
    """
    y = as_labels(labels)
    s = _as_scores(scores, len(y))
    if len(np.unique(y)) < 2:
        return None, None
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    gap = fpr - (1.0 - tpr)  # starts at -1 (fpr 0, fnr 1), ends at +1; rises monotonically
    i = int(np.argmax(gap >= 0))
    t = gap[i - 1] / (gap[i - 1] - gap[i])  # i >= 1 because gap[0] = -1
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    # roc_curve's first threshold is +inf (nothing flagged); interpolate only between real thresholds.
    low, high = thresholds[i], thresholds[i - 1]
    threshold = low if not np.isfinite(high) else high + t * (low - high)
    return float(eer), float(threshold)


def binary_metrics(labels: Any, scores: Any, threshold: float = 0.5) -> dict[str, float | int | None]:
    """Threshold-free and at-threshold metrics. Ranking metrics (auc, average_precision, eer) are None with one class;
    tpr is None without fakes, fpr/tnr None without reals."""
    y = as_labels(labels)
    s = _as_scores(scores, len(y))
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    both = n_fake > 0 and n_real > 0
    flagged = s >= threshold
    p = np.clip(s, EPSILON, 1.0 - EPSILON)
    tpr = float(flagged[y == 1].mean()) if n_fake else None
    tnr = float((~flagged[y == 0]).mean()) if n_real else None
    eer, eer_threshold = equal_error_rate(y, s)
    return {
        "auc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if both else None,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1.0 - p))),
        "accuracy": float(np.mean(flagged == (y == 1))),
        # Mean recall over the classes present: with one class it is that class's recall, not a warning.
        "balanced_accuracy": float(np.mean([r for r in (tpr, tnr) if r is not None])),
        "tpr": tpr,
        "fpr": None if tnr is None else 1.0 - tnr,
        "tnr": tnr,
        "threshold": float(threshold),
        "n": len(y),
        "n_real": n_real,
        "n_fake": n_fake,
    }


def breakdown(
    df: pd.DataFrame, group_columns: Sequence[str] = ("method", "source"), threshold: float = 0.5
) -> pd.DataFrame:
    """Metrics per value of each group column present in ``df``, one row per (group, value).

    ``auc`` is computed inside the group, so it is None for a group holding one class (a fake method, say).
    ``auc_vs_all_real`` ranks the group's fakes against ALL real samples of ``df``, the per-method AUC reported in
    FaceForensics++ papers (a method's fakes vs every pristine video); None for a group without fakes.
    ``flagged_fake`` is the fraction of the group flagged fake at ``threshold`` (a detection rate for a fake method,
    a false-alarm rate for the reals).
    """
    y = as_labels(df["label"])
    s = scores_of(df)
    real_scores = s[y == 0]
    rows = []
    for column in group_columns:
        if column not in df:
            continue
        values = df[column].fillna(_MISSING).astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            group_fakes = s[mask & (y == 1)]
            vs_real = None
            if len(group_fakes) and len(real_scores):
                vs_real = float(
                    roc_auc_score(
                        np.r_[np.zeros(len(real_scores)), np.ones(len(group_fakes))],
                        np.r_[real_scores, group_fakes],
                    )
                )
            rows.append(
                {
                    "group": column,
                    "value": value,
                    **binary_metrics(y[mask], s[mask], threshold),
                    "auc_vs_all_real": vs_real,
                    "flagged_fake": float(np.mean(s[mask] >= threshold)),
                }
            )
    return pd.DataFrame(rows)


def video_level(df: pd.DataFrame, video_column: str = "video", logit_column: str = "logit") -> pd.DataFrame:
    """One row per video: the mean of its frames' logits, then sigmoid (as ISPL's icpr2020dfdc does).

    Keeps ``label`` and, when present, ``method`` and ``source`` (first value per video); adds ``n_frames``. A video
    whose frames disagree on the label is an error, since its aggregate would be meaningless.
    """
    frames = df.assign(label=as_labels(df["label"]))
    if logit_column not in frames:  # fall back on the logit of the clipped score
        frames[logit_column] = _logit(np.clip(scores_of(frames), EPSILON, 1.0 - EPSILON))
    grouped = frames.groupby(video_column, sort=True, dropna=False)
    mixed = grouped["label"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"videos with frames of both labels: {list(mixed[mixed > 1].index[:5])}")
    kept = {c: "first" for c in ("label", "method", "source") if c in frames}
    videos = grouped.agg(
        **{logit_column: (logit_column, "mean"), "n_frames": (logit_column, "size")},
        **{c: (c, how) for c, how in kept.items()},
    ).reset_index()
    videos["score"] = expit(videos[logit_column].to_numpy(dtype=np.float64))
    return videos


def class_balance_weights(labels: Any) -> np.ndarray:
    """Per-sample weights (mean 1) giving each class present half the total weight."""
    y = as_labels(labels)
    weights = np.zeros(len(y))
    present = [c for c in (0, 1) if (y == c).any()]
    for c in present:
        weights[y == c] = len(y) / len(present) / (y == c).sum()
    return weights


def temperature_scale(logits: Any, labels: Any, balanced: bool = False) -> float:
    """The temperature T minimising the NLL of sigmoid(logits / T); fit on validation data, apply as logits / T.

    `balanced` weighs both classes equally, so the probabilities keep the 50/50 prior of balanced training instead
    of absorbing the validation split's own ratio of fakes (which says nothing about the user's photos).
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = as_labels(labels)
    w = class_balance_weights(y) if balanced else np.ones(len(y))

    def nll(log_t: float) -> float:
        scaled = z / math.exp(log_t)
        return float(np.mean(w * (np.logaddexp(0.0, scaled) - y * scaled)))  # stable BCE with logits

    # Optimise log T so T stays positive; [1/100, 100] covers any sane model.
    result = minimize_scalar(
        nll, bounds=(math.log(0.01), math.log(100.0)), method="bounded", options={"xatol": 1e-6}
    )
    return float(math.exp(result.x))


def threshold_at_fpr(scores_real: Any, fpr: float = 0.05) -> float:
    """The lowest threshold that flags (score >= threshold) at most ``fpr`` of the given real samples."""
    s = np.sort(np.asarray(scores_real, dtype=np.float64).ravel())[::-1]
    if len(s) == 0:
        raise ValueError("threshold_at_fpr needs at least one real score")
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    allowed = int(math.floor(fpr * len(s) + 1e-9))  # tolerance: 0.05 * 100 must give 5, not 4
    if allowed >= len(s):
        return float(s[-1])
    # Just above the first real that must stay unflagged; ties with it stay unflagged too.
    return float(np.nextafter(s[allowed], np.inf))


def reliability_bins(labels: Any, scores: Any, n_bins: int = 15, balanced: bool = False) -> pd.DataFrame:
    """Equal-width confidence bins on [0, 1]: count, mean score and fraction of fakes per non-empty bin.

    `balanced` weighs every sample by `class_balance_weights` (count becomes a weight), as if both classes were
    equally common."""
    y = as_labels(labels)
    s = np.clip(_as_scores(scores, len(y)), 0.0, 1.0)
    w = class_balance_weights(y) if balanced else np.ones(len(y))
    index = np.minimum((s * n_bins).astype(int), n_bins - 1)  # score 1.0 belongs to the last bin
    table = pd.DataFrame({"bin": index, "w": w, "ws": w * s, "wy": w * y}).groupby("bin").sum()
    bins = pd.DataFrame(
        {
            "count": table["w"],
            "mean_score": table["ws"] / table["w"],
            "fraction_fake": table["wy"] / table["w"],
        }
    )
    bins = bins[bins["count"] > 0]
    bins["lower"] = bins.index / n_bins
    return bins.reset_index()


def expected_calibration_error(labels: Any, scores: Any, n_bins: int = 15, balanced: bool = False) -> float:
    """ECE: the count-weighted mean |fraction of fakes - mean score| over equal-width bins (`balanced`: both
    classes weigh the same, the calibration a balanced-prior model should be judged by)."""
    bins = reliability_bins(labels, scores, n_bins, balanced)
    gaps = (bins["fraction_fake"] - bins["mean_score"]).abs()
    return float((gaps * bins["count"]).sum() / bins["count"].sum())
