"""Figures for a binary deepfake detector: ROC, precision-recall, reliability, score histograms (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from aletheia.evaluation.metrics import (
    _MISSING,
    _as_scores,
    as_labels,
    expected_calibration_error,
    reliability_bins,
)


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
