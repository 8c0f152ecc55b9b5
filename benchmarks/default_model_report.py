"""Held-out figures for a trained model: by source and method, shortcut checks, real-photo false positives, speed.

    .venv/bin/python benchmarks/default_model_report.py --model CKPT --run-dir RUN [--lomo-model CKPT
        --lomo-run-dir RUN] --photos ../shared/data/photos --output DIR

Everything is measured on faces the model did not train on: the run's validation split (split by group), the
methods a leave-one-method-out run never saw, and whole real photos that no training run uses.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aletheia.data.dataset import sources_with_reals
from aletheia.evaluation import binary_metrics, evaluation_report
from aletheia.training.config import TrainConfig
from aletheia.training.evaluate import score_faces
from aletheia.training.loop import load_training_faces


def _scored(model: str, faces: pd.DataFrame) -> pd.DataFrame:
    logits = score_faces(model, faces)
    return faces.assign(
        label=(faces["label"] == "fake").astype(int), logit=logits, score=1 / (1 + np.exp(-logits))
    )


def _auc(positive: pd.DataFrame, negative: pd.DataFrame) -> float | None:
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return binary_metrics(labels, np.r_[positive["score"], negative["score"]])["auc"]


def validation_figures(model: str, run_dir: str, out: Path, threshold: float) -> dict:
    config = TrainConfig.from_yaml(Path(run_dir) / "config.yaml")
    val = _scored(model, load_training_faces(config)[1])
    report = evaluation_report(
        val.drop(columns=["crop"]), out, threshold=threshold, title=f"Validation of {Path(model).name}"
    )
    reals = val[val["label"] == 0]
    ffpp_real = reals[reals["method"].str.startswith("FF++")]
    other_real = reals[~reals["method"].str.startswith("FF++")]
    ffpp_fake = val[(val["label"] == 1) & val["method"].str.startswith("FF++")]
    report["shortcuts"] = {
        # Like for like: FF++ fakes against FF++ reals only (same source, same processing).
        "ffpp_fake_vs_ffpp_real_auc": _auc(ffpp_fake, ffpp_real),
        "ffpp_fake_vs_ffpp_real_auc_by_method": {
            method: _auc(part, ffpp_real) for method, part in ffpp_fake.groupby("method")
        },
        # Two real sources: near 0.5 means the model does not tell datasets apart.
        "utkface_real_vs_ffpp_real_auc": _auc(other_real, ffpp_real),
        "mean_score_by_real_method": reals.groupby("method")["score"].mean().round(4).to_dict(),
    }
    report["beauty_filter"] = beauty_filter_check(model, reals, threshold)
    return report


def _beauty_filtered(crop: np.ndarray, face_box: np.ndarray) -> np.ndarray:
    """A fixed, strong skin smoothing under a plain ellipse over the face: not the training filter's random mask,
    so the check does not simply replay an augmentation the model trained on."""
    import cv2

    x0, y0, x1, y1 = face_box
    mask = np.zeros(crop.shape[:2], np.float32)
    cv2.ellipse(mask, (int((x0 + x1) / 2), int((y0 + y1) / 2 + 0.05 * (y1 - y0))),
                (int((x1 - x0) * 0.45), int((y1 - y0) * 0.5)), 0, 0, 360, 1.0, -1)  # fmt: skip
    mask = cv2.GaussianBlur(mask, (0, 0), 6)[..., None]
    smooth = cv2.bilateralFilter(crop, d=7, sigmaColor=70, sigmaSpace=10)
    return (smooth * mask + crop * (1 - mask)).astype(np.uint8)


def beauty_filter_check(model: str, reals: pd.DataFrame, threshold: float) -> dict:
    """Validation reals before and after a beauty filter on the face: a detector of blending must not call a
    retouched real face fake (polished portraits were the commonest false positives)."""
    from aletheia.data.dataset import FaceCropDataset
    from aletheia.pipeline import DeepfakeDetectorPipeline

    pipeline = DeepfakeDetectorPipeline(model_checkpoint=model)
    crops = FaceCropDataset(reals)  # no augmentation: the cached crops as they are
    filtered = [_beauty_filtered(crops[i][0].numpy(), crops.face_box(i)) for i in range(len(crops))]
    after = pipeline.score_crops(np.stack(filtered))
    before = reals["score"].to_numpy()
    return {"reals": len(reals), "mean_score_before": round(float(before.mean()), 4),
            "mean_score_after": round(float(after.mean()), 4),
            "flagged_before": round(float((before >= threshold).mean()), 4),
            "flagged_after": round(float((after >= threshold).mean()), 4)}  # fmt: skip


def trained_methods(config: TrainConfig, train: pd.DataFrame) -> set[str]:
    """Fake methods training drew from: `balance: source` also leaves out sources without real faces."""
    fakes = train[train["label"] == "fake"]
    if config.balance == "source":
        labels = (train["label"] == "fake").to_numpy(dtype=int)
        fakes = fakes[
            fakes["source"].isin(sources_with_reals(labels, train["source"].astype(str).to_numpy()))
        ]
    return set(fakes["method"])


def left_out_method(model: str, run_dir: str, threshold: float) -> dict:
    """The methods a leave-one-method-out run never trained on: all their faces against the validation reals."""
    config = TrainConfig.from_yaml(Path(run_dir) / "config.yaml")
    train, val = load_training_faces(config)
    from aletheia.data.prepare import load_faces

    every = pd.concat([load_faces(d) for d in config.data], ignore_index=True)
    unseen = every[every["method"].isin(config.exclude_methods)]
    scored = _scored(model, pd.concat([val[val["label"] == "real"], unseen], ignore_index=True))

    def figures(fakes: pd.DataFrame, reals: pd.DataFrame) -> dict:
        part = pd.concat([fakes, reals])
        ffpp_real = reals[reals["method"].str.startswith("FF++")]
        return {**binary_metrics(part["label"].to_numpy(), part["score"].to_numpy(), threshold),
                "auc_vs_ffpp_real": _auc(fakes, ffpp_real)}  # fmt: skip

    results = {}
    for method in config.exclude_methods:
        results[method] = figures(scored[scored["method"] == method], scored[scored["label"] == 0])
    # The same model on the other methods, from its own validation split.
    val_scored = _scored(model, val)
    val_reals = val_scored[val_scored["label"] == 0]
    trained = trained_methods(config, train)
    for method in sorted(
        set(val_scored.loc[val_scored["label"] == 1, "method"]) - set(config.exclude_methods)
    ):
        seen = "(seen)" if method in trained else "(never trained on, validation faces)"
        results[f"{seen} {method}"] = figures(val_scored[val_scored["method"] == method], val_reals)
    return results


def photo_false_positives(model: str, photos: Path, tta: str = "mirror") -> dict:
    """Real photos scored whole: how many reach the threshold (`flagged`, as before verdicts had a band), and how
    many are called fake or inconclusive by the three-way verdict."""
    from aletheia.io import iter_input_files
    from aletheia.pipeline import DeepfakeDetectorPipeline

    pipeline = DeepfakeDetectorPipeline(model_checkpoint=model, tta=tta)
    results = list(pipeline.predict_many(iter_input_files([photos])))
    scored = [r for r in results if r.faces]
    flagged = [r.path for r in scored if r.score >= pipeline.threshold]
    called_fake = [r.path for r in scored if r.label == "fake"]
    inconclusive = [r.path for r in scored if r.label == "inconclusive"]
    return {"photos": len(results), "with_faces": len(scored), "flagged_fake": len(flagged),
            "flagged_share": len(flagged) / max(1, len(scored)), "flagged": flagged,
            "called_fake_share": len(called_fake) / max(1, len(scored)),
            "inconclusive_share": len(inconclusive) / max(1, len(scored)),
            "threshold": pipeline.threshold, "tta": tta}  # fmt: skip


def classifier_speed(model: str, batch: int = 32, repeats: int = 5) -> dict:
    from aletheia.pipeline import DeepfakeDetectorPipeline

    pipeline = DeepfakeDetectorPipeline(model_checkpoint=model, batch_size=batch)
    crops = np.random.default_rng(0).integers(0, 255, size=(batch, 224, 224, 3), dtype=np.uint8)
    pipeline.logits(crops)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.logits(crops)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return {"backend": pipeline.backend, "batch": batch, "ms_per_face": round(float(np.median(times)), 2)}


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def summary_markdown(summary: dict) -> str:
    """The headline figures as Markdown tables (the model card quotes them; validation/report.md has the rest)."""
    lines = [f"Threshold {summary['threshold']:.3f} (stored with the model).", ""]
    shortcuts = summary["validation"]["shortcuts"]
    lines += ["| like-for-like check (validation, split by group) | AUC |", "|---|---|"]
    lines += [f"| FF++ fakes vs FF++ reals | {_fmt(shortcuts['ffpp_fake_vs_ffpp_real_auc'])} |"]
    lines += [
        f"| {m} vs FF++ reals | {_fmt(a)} |"
        for m, a in shortcuts["ffpp_fake_vs_ffpp_real_auc_by_method"].items()
    ]
    lines += [f"| UTKFace reals vs FF++ reals (0.5 = cannot tell datasets apart) | "
              f"{_fmt(shortcuts['utkface_real_vs_ffpp_real_auc'])} |", ""]  # fmt: skip
    if "leave_one_method_out" in summary:
        lines += ["| leave-one-method-out model: fakes vs | all validation reals: AUC | FF++ reals: AUC | log-loss | "
                  "balanced acc. |", "|---|---|---|---|---|"]  # fmt: skip
        for method, m in summary["leave_one_method_out"].items():
            lines.append(f"| {method} | {_fmt(m['auc'])} | {_fmt(m['auc_vs_ffpp_real'])} | {_fmt(m['log_loss'])} | "
                         f"{_fmt(m['balanced_accuracy'])} |")  # fmt: skip
        lines.append("")
    beauty = summary["validation"]["beauty_filter"]
    lines += [f"Validation reals flagged fake: {beauty['flagged_before']:.1%}; after a beauty filter on the face "
              f"{beauty['flagged_after']:.1%} (mean score {beauty['mean_score_before']:.3f} -> "
              f"{beauty['mean_score_after']:.3f}).", ""]  # fmt: skip
    if "real_photos" in summary:
        photos = summary["real_photos"]
        lines += [f"Real photos flagged fake: {photos['flagged_fake']} of {photos['with_faces']} with faces "
                  f"({photos['flagged_share']:.1%}).", ""]  # fmt: skip
    speed = summary["speed"]
    lines.append(
        f"Classifier speed: {speed['ms_per_face']} ms per face ({speed['backend']}, batch {speed['batch']})."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--lomo-model")
    parser.add_argument("--lomo-run-dir")
    parser.add_argument("--photos", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    import torch

    from aletheia.models.spec import resolve_model_spec

    args.model = str(resolve_model_spec(args.model).checkpoint)  # a bundled name or a file
    threshold = float(torch.load(args.model, weights_only=True).get("threshold", 0.5))
    summary: dict = {"model": args.model, "threshold": threshold}
    validation = validation_figures(args.model, args.run_dir, args.output / "validation", threshold)
    summary["validation"] = {"overall": validation["overall"], "per_method": validation["per_method"],
                             "per_source": validation["per_source"], "shortcuts": validation["shortcuts"],
                             "beauty_filter": validation["beauty_filter"]}  # fmt: skip
    if args.lomo_model:
        # At the leave-one-out model's own calibrated threshold: it was chosen without the left-out method too.
        lomo_threshold = float(torch.load(args.lomo_model, weights_only=True).get("threshold", 0.5))
        summary["leave_one_method_out"] = left_out_method(args.lomo_model, args.lomo_run_dir, lomo_threshold)
    if args.photos:
        summary["real_photos"] = photo_false_positives(args.model, args.photos)
    summary["speed"] = classifier_speed(args.model)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.output / "summary.md").write_text(summary_markdown(summary))
    print(json.dumps({k: v for k, v in summary.items() if k != "validation"}, indent=1, default=str))
    print(json.dumps(summary["validation"]["shortcuts"], indent=1))


if __name__ == "__main__":
    main()
