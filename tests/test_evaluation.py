"""Evaluation metrics against hand-computed values, calibration on synthetic data, and the written report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from aletheia.evaluation import (
    as_labels,
    binary_metrics,
    breakdown,
    equal_error_rate,
    evaluation_report,
    expected_calibration_error,
    plot_roc,
    temperature_scale,
    threshold_at_fpr,
    video_level,
)

# Six samples, worked by hand.
#   reals (0): 0.1, 0.4, 0.6        fakes (1): 0.35, 0.8, 0.9
# AUC = P(fake score > real score) over 9 pairs: 0.35 beats 1 real, 0.8 and 0.9 beat 3 each -> 7/9.
# At threshold 0.5 flagged: 0.6 (real, FP), 0.8, 0.9 (TP); 0.35 is a FN.
#   TPR = 2/3, FPR = 1/3, TNR = 2/3, accuracy = 4/6, balanced accuracy = (2/3 + 2/3) / 2 = 2/3.
# Log-loss = -(ln .9 + ln .6 + ln .4 + ln .35 + ln .8 + ln .9) / 6 (reals contribute ln(1 - p)).
# EER: lowering the threshold from 0.8 to 0.6 moves (FPR, FNR) from (0, 1/3) to (1/3, 1/3): they meet at 1/3, at 0.6.
LABELS = [0, 0, 0, 1, 1, 1]
SCORES = [0.1, 0.4, 0.6, 0.35, 0.8, 0.9]


def test_binary_metrics_match_hand_computation() -> None:
    m = binary_metrics(LABELS, SCORES, threshold=0.5)
    assert m["auc"] == pytest.approx(7 / 9)
    assert m["tpr"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 3)
    assert m["tnr"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    expected_log_loss = -sum(math.log(p) for p in (0.9, 0.6, 0.4, 0.35, 0.8, 0.9)) / 6
    assert m["log_loss"] == pytest.approx(expected_log_loss)
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["eer_threshold"] == pytest.approx(0.6)
    assert (m["n"], m["n_real"], m["n_fake"]) == (6, 3, 3)
    # A score equal to the threshold is flagged: at 0.6 the 0.6 real is a false positive.
    assert binary_metrics(LABELS, SCORES, threshold=0.6)["fpr"] == pytest.approx(1 / 3)
    # AP by hand: ranked 0.9 (fake), 0.8 (fake), 0.6 (real), 0.4 (real), 0.35 (fake): precisions at hits 1, 1, 3/5.
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 5) / 3)


def test_string_labels_give_the_same_metrics() -> None:
    named = ["real" if v == 0 else "FAKE" for v in LABELS]
    assert binary_metrics(named, SCORES) == binary_metrics(LABELS, SCORES)
    with pytest.raises(ValueError, match="maybe"):
        as_labels(["real", "maybe"])
    with pytest.raises(ValueError):
        as_labels([0, 2])


def test_eer_is_interpolated_between_roc_vertices() -> None:
    # reals 0.3, 0.7; fakes 0.7, 0.9. At 0.9: (FPR, FNR) = (0, 1/2); at 0.7: (1/2, 0). The ROC segment between them
    # crosses FPR = FNR halfway: EER 1/4, threshold halfway between 0.9 and 0.7.
    eer, threshold = equal_error_rate([0, 0, 1, 1], [0.3, 0.7, 0.7, 0.9])
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.8)
    # All scores tied: a chance-level detector, EER 1/2.
    assert equal_error_rate([0, 1, 0, 1], [0.5] * 4)[0] == pytest.approx(0.5)
    # Perfect separation: EER 0.
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == pytest.approx(0.0)


def test_single_class_leaves_ranking_metrics_undefined() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5)
    assert m["auc"] is None and m["eer"] is None and m["average_precision"] is None
    assert m["tpr"] == pytest.approx(2 / 3)
    assert m["fpr"] is None and m["tnr"] is None
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)  # the recall of the one class present
    assert m["log_loss"] == pytest.approx(-(math.log(0.2) + math.log(0.7) + math.log(0.9)) / 3)


def test_log_loss_clips_certain_mistakes() -> None:
    m = binary_metrics([0, 1], [1.0, 0.0])
    assert m["log_loss"] == pytest.approx(-math.log(1e-7))


def _ffpp_like() -> pd.DataFrame:
    # Reals 0.1, 0.2, 0.3, 0.6. Deepfakes 0.7, 0.9 beat every real -> AUC vs all reals 1.
    # FaceSwap 0.15, 0.5: 0.15 beats one real (0.1), 0.5 beats three -> 4/8 = 0.5.
    return pd.DataFrame({
        "label": ["real"] * 4 + ["fake"] * 4,
        "score": [0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 0.15, 0.5],
        "method": [None] * 4 + ["Deepfakes", "Deepfakes", "FaceSwap", "FaceSwap"],
        "source": ["a", "b", "a", "b", "a", "b", "a", "b"],
    })  # fmt: skip


def test_breakdown_ranks_each_method_against_all_reals() -> None:
    table = breakdown(_ffpp_like(), ("method", "source"), threshold=0.5).set_index(["group", "value"])
    deepfakes, faceswap, reals = (
        table.loc[("method", "Deepfakes")],
        table.loc[("method", "FaceSwap")],
        table.loc[("method", "(none)")],
    )
    assert deepfakes["auc_vs_all_real"] == pytest.approx(1.0)
    assert faceswap["auc_vs_all_real"] == pytest.approx(0.5)
    assert deepfakes["auc"] is None or pd.isna(deepfakes["auc"])  # one class inside the group
    assert faceswap["flagged_fake"] == pytest.approx(0.5)  # 0.5 >= 0.5 is flagged, 0.15 is not
    assert reals["flagged_fake"] == pytest.approx(0.25)  # the 0.6 real
    assert pd.isna(reals["auc_vs_all_real"])
    # Source "a": reals 0.1, 0.3, fakes 0.7, 0.15 -> within-group AUC 3/4; vs all 4 reals: 0.7 beats 4, 0.15 beats 1 -> 5/8.
    source_a = table.loc[("source", "a")]
    assert source_a["auc"] == pytest.approx(0.75)
    assert source_a["auc_vs_all_real"] == pytest.approx(5 / 8)
    assert int(source_a["n"]) == 4


def test_breakdown_skips_absent_columns() -> None:
    table = breakdown(_ffpp_like().drop(columns=["source"]), ("method", "source"))
    assert set(table["group"]) == {"method"}


def test_video_level_averages_logits_not_probabilities() -> None:
    frames = pd.DataFrame({
        "video": ["v1", "v1", "v1", "v2", "v2"],
        "logit": [4.0, -2.0, 4.0, -1.0, -3.0],
        "label": [1, 1, 1, 0, 0],
        "method": ["Deepfakes"] * 3 + [None] * 2,
        "source": ["x"] * 5,
    })  # fmt: skip
    videos = video_level(frames).set_index("video")
    assert videos.loc["v1", "logit"] == pytest.approx(2.0)  # the median would be 4
    # Mean logit 2 -> sigmoid(2) = 0.8808; the mean of the frame probabilities would be 0.6944 instead.
    assert videos.loc["v1", "score"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert videos.loc["v2", "score"] == pytest.approx(1 / (1 + math.exp(2.0)))
    assert videos.loc["v1", "n_frames"] == 3 and videos.loc["v2", "n_frames"] == 2
    assert (
        videos.loc["v1", "method"] == "Deepfakes"
        and videos.loc["v1", "label"] == 1
        and videos.loc["v2", "source"] == "x"
    )
    with pytest.raises(ValueError, match="both labels"):
        video_level(frames.assign(label=[1, 0, 1, 0, 0]))


def test_video_level_from_scores_only() -> None:
    frames = pd.DataFrame(
        {"group": ["a", "a"], "score": [0.5, 1 / (1 + math.exp(-2.0))], "label": ["fake", "fake"]}
    )
    videos = video_level(frames, video_column="group")
    assert videos["logit"].iloc[0] == pytest.approx(1.0, abs=1e-6)


def test_temperature_scale_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at z
    assert temperature_scale(z * 3.0, labels) == pytest.approx(3.0, rel=0.1)
    assert temperature_scale(z / 2.0, labels) == pytest.approx(0.5, rel=0.1)


def test_balanced_temperature_scale_ignores_the_validation_share_of_fakes() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 2.0, 40_000)
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at z, about half fakes
    keep = (labels == 0) | (rng.random(z.shape) < 0.2)  # a validation split with few fakes
    assert temperature_scale(z[keep] * 3.0, labels[keep], balanced=True) == pytest.approx(3.0, rel=0.1)
    # The true balanced-prior probabilities look miscalibrated on the skewed split unless both classes weigh alike.
    true_p = 1 / (1 + np.exp(-z[keep]))
    assert expected_calibration_error(labels[keep], true_p, balanced=True) < 0.03
    assert expected_calibration_error(labels[keep], true_p) > 0.15


def test_threshold_at_fpr_flags_at_most_that_fraction() -> None:
    reals = np.arange(100) / 100.0
    threshold = threshold_at_fpr(reals, fpr=0.05)
    assert np.mean(reals >= threshold) == pytest.approx(0.05)  # exactly 5: as sensitive as allowed
    assert 0.94 < threshold <= 0.95
    # Ties at the cut cannot be split: all of them stay unflagged rather than exceed the budget.
    tied = np.array([0.1] * 8 + [0.9, 0.9])
    assert np.mean(tied >= threshold_at_fpr(tied, fpr=0.1)) == 0.0
    assert np.mean(tied >= threshold_at_fpr(tied, fpr=0.2)) == pytest.approx(0.2)
    assert np.mean(reals >= threshold_at_fpr(reals, fpr=0.0)) == 0.0
    assert np.mean(reals >= threshold_at_fpr(reals, fpr=1.0)) == 1.0


def test_expected_calibration_error_tells_calibrated_from_overconfident() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(50_000)
    labels = (rng.random(p.shape) < p).astype(int)
    assert expected_calibration_error(labels, p) < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)  # right side, far too sure
    assert expected_calibration_error(labels, overconfident) > 0.2
    # Hand case, 10 bins: scores 0.95 x4 with 2 fakes -> |0.5 - 0.95| = 0.45 on all samples.
    assert expected_calibration_error([1, 1, 0, 0], [0.95] * 4, n_bins=10) == pytest.approx(0.45)
    # Bins are weighted by count: 3 samples at 0.05 (no fakes, gap 0.05) and 1 at 0.95 (a real, gap 0.95)
    # -> (3 * 0.05 + 1 * 0.95) / 4 = 0.275, where an unweighted mean over bins would give 0.5.
    assert expected_calibration_error([0, 0, 0, 0], [0.05, 0.05, 0.05, 0.95], n_bins=10) == pytest.approx(
        0.275
    )


def test_plot_roc_draws_overall_and_one_curve_per_method(tmp_path) -> None:
    df = _ffpp_like()
    figure = plot_roc(as_labels(df["label"]), df["score"], df["method"], tmp_path / "roc.png")
    assert isinstance(figure, Figure) and (tmp_path / "roc.png").stat().st_size > 0
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["overall (AUC 0.750)", "Deepfakes (AUC 1.000)", "FaceSwap (AUC 0.500)"]


def test_evaluation_report_writes_metrics_markdown_and_figures(tmp_path) -> None:
    rng = np.random.default_rng(2)
    frames = _ffpp_like().loc[lambda d: d.index.repeat(3)].reset_index(drop=True)
    frames["video"] = np.repeat([f"v{i}" for i in range(8)], 3)
    frames["logit"] = np.log(frames["score"] / (1 - frames["score"])) + rng.normal(0, 0.01, len(frames))
    frames = frames.drop(columns=["score"])
    report = evaluation_report(frames, tmp_path / "out", threshold=0.5, title="Unit test run")

    for path in [*report["figures"].values(), report["paths"]["metrics"], report["paths"]["report"]]:
        assert (tmp_path / "out").joinpath(path).stat().st_size > 0
    assert set(report["figures"]) == {"roc", "precision_recall", "reliability", "score_histograms"}
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["overall"]["n"] == 24 and saved["video_level"]["overall"]["n"] == 8
    assert saved["overall"] == report["overall"]
    per_method = {row["value"]: row for row in saved["per_method"]}
    assert per_method["Deepfakes"]["auc_vs_all_real"] == pytest.approx(1.0)
    assert 0.0 <= saved["overall"]["ece"] <= 1.0
    assert {row["value"] for row in saved["per_source"]} == {"a", "b"}

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.startswith("# Unit test run")
    assert "| value | n | n_real | n_fake | auc | auc_vs_all_real |" in markdown
    assert "| Deepfakes | 6 | 0 | 6 | – | 1.0000 |" in markdown
    assert "## Per source" in markdown and "## Per video" in markdown
    assert "![roc](roc.png)" in markdown and "![reliability](reliability.png)" in markdown
