"""MLRun handlers: prepare, train and evaluate as tracked runs. Each takes MLRun's context first, then plain params.

These run in-process when no MLRun service is configured, and as jobs on the service when MLRUN_DBPATH points at one
(`aletheia.training.tracking` decides). Inside a hyper-parameter grid MLRun cannot log artifacts, so `train` logs only
results there (`log_artifacts=False`); the winner is re-run with artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _log_png(context, key: str, path: str | Path) -> None:
    context.log_artifact(key, local_path=str(path), format="png")


def prepare(context, datasets: list, output: str, extra_real: list | None = None, frames_per_video: int = 32,
            face_policy: str = "scale", size: int = 224, max_faces: int = 4, workers: int = 2,
            limit: int | None = None, min_face_fraction: float | None = None) -> None:  # fmt: skip
    """Index, detect, crop and cache faces; write and log the bias report."""
    from mlrun.artifacts import PlotArtifact

    from aletheia.data.bias import bias_report
    from aletheia.data.prepare import PrepareConfig, build_index, load_faces
    from aletheia.data.prepare import prepare as run_prepare

    config = PrepareConfig(datasets=list(datasets), output=output, extra_real=list(extra_real or []),
                           frames_per_video=frames_per_video, face_policy=face_policy, size=size,
                           max_faces=max_faces, workers=workers, limit=limit,
                           min_face_fraction=min_face_fraction)  # fmt: skip
    summary = run_prepare(config)
    report = bias_report(build_index(config), Path(output) / "bias", faces=load_faces(output))
    context.log_artifact(PlotArtifact("class_balance", body=report["figures"]["class_balance"]))
    for name, path in report["paths"].items():
        _log_png(context, f"bias_{name}", path)
    context.log_artifact("bias_report", local_path=str(Path(output) / "bias" / "bias_report.md"), format="md")
    context.log_artifact(
        "bias_summary", local_path=str(Path(output) / "bias" / "bias_summary.csv"), format="csv"
    )
    for figure in report["figures"].values():
        plt.close(figure)
    context.log_result("items", summary["items"])
    context.log_result("faces", summary["faces"])
    for status, count in summary["status"].items():
        context.log_result(f"items_{status}", int(count))
    context.log_result("bias_flags", report["flags"])


def _learning_curves(history: list[dict]) -> plt.Figure:
    frame = pd.DataFrame(history)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    frame.plot(x="epoch", y=["train_loss", "val_loss"], ax=left, marker="o", title="loss")
    frame.plot(x="epoch", y=["val_auc", "val_balanced_accuracy"], ax=right, marker="o", title="validation")
    fig.tight_layout()
    return fig


def train(context, config: dict, log_artifacts: bool = True, **overrides) -> None:
    """Train with `config` (a TrainConfig as a dict) updated by `overrides`: the hyper-parameters of a grid point."""
    from aletheia.training.config import TrainConfig
    from aletheia.training.loop import train as run_training

    values = {**config, **overrides}
    if overrides and not log_artifacts:
        # Each grid point trains into its own folder, named by its parameters.
        values["output"] = str(
            Path(config["output"]) / "grid" / "_".join(f"{k}-{v}" for k, v in sorted(overrides.items()))
        )
    train_config = TrainConfig(**values)

    def on_epoch(epoch: int, record: dict) -> None:
        for key, value in record.items():
            if key != "epoch" and value is not None:
                context.log_result(key, float(value))
        context.log_result("epochs_done", epoch + 1)
        context.commit(completed=False)

    result = run_training(train_config, on_epoch=on_epoch, progress=log_artifacts)  # no bars inside a grid
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    context.log_result("best_epoch", result.best_epoch)
    context.log_result("best_val_loss", result.best_val_loss)
    context.log_result("best_val_auc", best["val_auc"])
    context.log_result("stopped_early", result.stopped_early)
    context.log_result("observed_batch_size", best.get("observed_batch_size"))
    context.log_result("output", str(result.output))
    if not log_artifacts:
        return
    figure = _learning_curves(result.history)
    curves = result.output / "learning_curves.png"
    figure.savefig(curves, dpi=100)
    plt.close(figure)
    _log_png(context, "learning_curves", curves)
    context.log_artifact("history", local_path=str(result.output / "history.json"), format="json")
    context.log_model(
        "model", model_file=str(result.best_checkpoint), framework="pytorch", algorithm=train_config.model,
        metrics={k: v for k, v in best.items() if isinstance(v, (int, float))},
        parameters=json.loads(train_config.model_dump_json()),
    )  # fmt: skip


def evaluate(context, model: str, data: list, output: str, split: str = "val", threshold: float | None = None,
             run_dir: str | None = None, batch_size: int = 32) -> None:  # fmt: skip
    """Score prepared faces with a checkpoint and write metrics, curves and calibration plots."""
    from aletheia.training.evaluate import evaluate_prepared

    report = evaluate_prepared(
        model, list(data), output, split=split, threshold=threshold, run_dir=run_dir, batch_size=batch_size
    )
    for key, value in report["overall"].items():
        if isinstance(value, (int, float)) and value is not None:
            context.log_result(key, value)
    for name, path in report.get("figures", {}).items():
        _log_png(context, name, path)
    context.log_artifact("metrics", local_path=str(Path(output) / "metrics.json"), format="json")
    context.log_artifact("report", local_path=str(Path(output) / "report.md"), format="md")
