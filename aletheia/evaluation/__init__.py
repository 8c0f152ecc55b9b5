"""Metrics, curves, calibration and reports for a binary deepfake detector.

Pure functions over arrays and DataFrames: no model, no MLRun. Conventions used throughout:

- label 1 = fake, 0 = real (the strings "fake" / "real" are accepted too);
- ``score`` is the probability of *fake*; a sample is flagged fake when ``score >= threshold``;
- a DataFrame may carry ``score`` and/or ``logit`` (score = sigmoid(logit) when only the logit is there), and optionally
  ``method``, ``source`` and ``video`` (or ``group``) columns.

Split by concern: `metrics` (numbers and calibration), `plots` (figures), `report` (metrics.json, report.md and
figures in a folder). Every name is importable from here; figures load matplotlib only when asked for.
"""

from __future__ import annotations

import importlib

from aletheia.evaluation.metrics import (
    EPSILON,
    as_labels,
    binary_metrics,
    breakdown,
    class_balance_weights,
    equal_error_rate,
    expected_calibration_error,
    reliability_bins,
    scores_of,
    temperature_scale,
    threshold_at_fpr,
    video_level,
)

_LAZY = {
    "plot_roc": "plots",
    "plot_precision_recall": "plots",
    "plot_reliability": "plots",
    "plot_score_histograms": "plots",
    "evaluation_report": "report",
}

__all__ = [
    "EPSILON",
    "as_labels",
    "binary_metrics",
    "breakdown",
    "class_balance_weights",
    "equal_error_rate",
    "expected_calibration_error",
    "reliability_bins",
    "scores_of",
    "temperature_scale",
    "threshold_at_fpr",
    "video_level",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
