"""The evaluation report: metrics.json, report.md and the figures, written into one folder."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aletheia.evaluation.metrics import (
    as_labels,
    binary_metrics,
    breakdown,
    expected_calibration_error,
    scores_of,
    video_level,
)
from aletheia.evaluation.plots import plot_precision_recall, plot_reliability, plot_roc, plot_score_histograms


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
