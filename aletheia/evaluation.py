"""Metrics, curves, calibration and reports for a binary deepfake detector.

Pure functions over arrays and DataFrames: no model, no MLRun. Conventions used throughout:

- label 1 = fake, 0 = real (the strings "fake" / "real" are accepted too);
- ``score`` is the probability of *fake*; a sample is flagged fake when ``score >= threshold``;
- a DataFrame may carry ``score`` and/or ``logit`` (score = sigmoid(logit) when only the logit is there), and optionally
  ``method``, ``source`` and ``video`` (or ``group``) columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar
from scipy.special import expit
from scipy.special import logit as _logit
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

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


def _save(figure: Figure, path: str | Path | None) -> Figure:
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def plot_roc(
    labels: Any, scores: Any, methods: Any = None, path: str | Path | None = None, title: str = "ROC"
) -> Figure:
    """ROC overall and, given ``methods``, one curve per method: its fakes against all reals (as ``auc_vs_all_real``)."""
    # Figure() rather than pyplot: no global state, nothing to close, Agg canvas when saving.
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    y = as_labels(labels)
    s = _as_scores(scores, len(y))
    curves = [("overall", y, s)]
    if methods is not None:
        names = pd.Series(np.asarray(methods).ravel()).fillna(_MISSING).astype(str).to_numpy()
        for name in sorted(set(names[y == 1])):
            pick = (y == 0) | (names == name)
            curves.append((name, y[pick], s[pick]))
    for name, cy, cs in curves:
        if len(np.unique(cy)) < 2:
            continue
        fpr, tpr, _ = roc_curve(cy, cs)
        axes.plot(
            fpr, tpr, lw=2.0 if name == "overall" else 1.0, label=f"{name} (AUC {roc_auc_score(cy, cs):.3f})"
        )
    axes.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    axes.set(
        xlabel="false positive rate (reals flagged)", ylabel="true positive rate (fakes caught)", title=title
    )
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_precision_recall(
    labels: Any, scores: Any, path: str | Path | None = None, title: str = "Precision-recall"
) -> Figure:
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    y = as_labels(labels)
    s = _as_scores(scores, len(y))
    if len(np.unique(y)) == 2:
        precision, recall, _ = precision_recall_curve(y, s)
        axes.step(recall, precision, where="post", label=f"AP {average_precision_score(y, s):.3f}")
        axes.axhline(y.mean(), ls="--", color="grey", lw=0.8, label=f"chance ({y.mean():.2f})")
        axes.legend(loc="lower left", fontsize="small")
    axes.set(xlabel="recall (fakes caught)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    return _save(figure, path)


def plot_reliability(
    labels: Any, scores: Any, n_bins: int = 15, path: str | Path | None = None, title: str = "Reliability"
) -> Figure:
    figure = Figure(figsize=(5.5, 5))
    axes = figure.subplots()
    bins = reliability_bins(labels, scores, n_bins)
    ece = expected_calibration_error(labels, scores, n_bins)
    axes.bar(
        bins["lower"],
        bins["fraction_fake"],
        width=1.0 / n_bins,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="fraction fake",
    )
    axes.plot(bins["mean_score"], bins["fraction_fake"], "o", color="black", ms=3, label="bin mean score")
    axes.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    axes.set(
        xlabel="predicted probability of fake",
        ylabel="observed fraction fake",
        xlim=(0, 1),
        ylim=(0, 1),
        title=f"{title} (ECE {ece:.3f}, {n_bins} bins)",
    )
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def plot_score_histograms(
    labels: Any,
    scores: Any,
    threshold: float | None = None,
    path: str | Path | None = None,
    title: str = "Scores per class",
) -> Figure:
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    y = as_labels(labels)
    s = _as_scores(scores, len(y))
    edges = np.linspace(0.0, 1.0, 41) if s.min() >= 0.0 and s.max() <= 1.0 else 40
    for value, name, color in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        if np.any(y == value):
            axes.hist(
                s[y == value],
                bins=edges,
                alpha=0.6,
                color=color,
                label=f"{name} (n={int(np.sum(y == value))})",
            )
    if threshold is not None:
        axes.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
    axes.set(xlabel="score (probability of fake)", ylabel="count", title=title)
    axes.legend(fontsize="small")
    return _save(figure, path)


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _markdown_table(rows: list[dict], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


_OVERALL_KEYS = (
    "n",
    "n_real",
    "n_fake",
    "auc",
    "average_precision",
    "eer",
    "eer_threshold",
    "log_loss",
    "ece",
    "accuracy",
    "balanced_accuracy",
    "tpr",
    "fpr",
    "tnr",
)
_GROUP_COLUMNS = (
    "value",
    "n",
    "n_real",
    "n_fake",
    "auc",
    "auc_vs_all_real",
    "flagged_fake",
    "balanced_accuracy",
    "log_loss",
)


def evaluation_report(
    df: pd.DataFrame, out_dir: str | Path, threshold: float = 0.5, title: str = "Evaluation", n_bins: int = 15
) -> dict:
    """Write ``metrics.json``, ``report.md`` and the figures (PNG) into ``out_dir``; return what ``metrics.json`` holds.

    Keys: ``overall`` (flat numbers, ECE included), ``per_method`` / ``per_source`` (lists of rows, see `breakdown`),
    ``video_level`` (when a ``video`` or ``group`` column exists: ``overall`` and ``per_method`` on per-video scores),
    ``figures`` (name -> PNG path) and ``paths`` (metrics / report).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = as_labels(df["label"])
    s = scores_of(df)
    table = df.assign(label=y, score=s)
    overall = {**binary_metrics(y, s, threshold), "ece": expected_calibration_error(y, s, n_bins)}
    report: dict[str, Any] = {
        "title": title,
        "threshold": float(threshold),
        "overall": {k: overall[k] for k in _OVERALL_KEYS},
        "per_method": breakdown(table, ("method",), threshold).to_dict("records"),
        "per_source": breakdown(table, ("source",), threshold).to_dict("records"),
    }
    video_column = next((c for c in ("video", "group") if c in table), None)
    if video_column is not None:
        videos = video_level(table, video_column)
        video_overall = {
            **binary_metrics(videos["label"], videos["score"], threshold),
            "ece": expected_calibration_error(videos["label"], videos["score"], n_bins),
        }
        report["video_level"] = {
            "column": video_column,
            "overall": {k: video_overall[k] for k in _OVERALL_KEYS},
            "per_method": breakdown(videos, ("method",), threshold).to_dict("records"),
        }

    figures = {
        "roc": out / "roc.png",
        "precision_recall": out / "precision_recall.png",
        "reliability": out / "reliability.png",
        "score_histograms": out / "score_histograms.png",
    }
    methods = table.get("method")
    plot_roc(y, s, methods, figures["roc"], title=f"ROC, {len(y)} samples")
    plot_precision_recall(y, s, figures["precision_recall"])
    plot_reliability(y, s, n_bins, figures["reliability"])
    plot_score_histograms(y, s, threshold, figures["score_histograms"])
    report["figures"] = {name: str(path) for name, path in figures.items()}
    report["paths"] = {"metrics": str(out / "metrics.json"), "report": str(out / "report.md")}
    report = _clean(report)

    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_report_markdown(report))
    return report


def _report_markdown(report: dict) -> str:
    metric_rows = [{"metric": k, "value": v} for k, v in report["overall"].items()]
    parts = [
        f"# {report['title']}",
        "",
        f"Threshold: {report['threshold']:g} (flagged fake when score >= threshold).",
        "",
        "## Overall (per sample)",
        "",
        _markdown_table(metric_rows, ("metric", "value")),
    ]
    for key, heading in (("per_method", "Per method"), ("per_source", "Per source")):
        if report[key]:
            parts += ["", f"## {heading}", "", _markdown_table(report[key], _GROUP_COLUMNS)]
    if report["per_method"]:
        parts += [
            "",
            "`auc_vs_all_real`: the method's fakes ranked against all real samples (FaceForensics++ convention); "
            "`flagged_fake`: fraction flagged fake at the threshold.",
        ]
    if "video_level" in report:
        video = report["video_level"]
        rows = [{"metric": k, "value": v} for k, v in video["overall"].items()]
        parts += [
            "",
            f"## Per video (mean logit over frames, grouped by `{video['column']}`)",
            "",
            _markdown_table(rows, ("metric", "value")),
        ]
        if video["per_method"]:
            parts += [
                "",
                "### Per video, per method",
                "",
                _markdown_table(video["per_method"], _GROUP_COLUMNS),
            ]
    parts += ["", "## Figures", ""]
    parts += [f"![{name}]({Path(path).name})" for name, path in report["figures"].items()]
    return "\n".join(parts) + "\n"
