"""Prepare, train, resume, tune and evaluate as real MLRun (local) runs on a tiny dataset the test generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from aletheia.cli import main
from aletheia.faces.extract import crop_face
from aletheia.io import load_image
from aletheia.training.tracking import list_records

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def _write(path: Path, image: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ and fake/ folders of astronaut variants (fakes get a smoothed face: a crude blending artefact),
    plus one corrupt file and one image without a face, which prepare must report and drop."""
    root = tmp_path_factory.mktemp("tiny")
    astronaut = load_image(ASTRONAUT)
    rng = np.random.default_rng(0)
    for i in range(10):
        gain = rng.uniform(0.8, 1.2)
        image = np.clip(astronaut.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        image = image[:, ::-1] if i % 2 else image
        _write(root / "real" / f"person{i}.jpg", image)
        fake = image.copy()
        fake[80:180, 170:290] = cv2.GaussianBlur(fake[80:180, 170:290], (0, 0), 3)
        _write(root / "fake" / "blur" / f"person{i}.jpg", fake)
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _write(root / "real" / "wall.jpg", np.full((300, 300, 3), 120, dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def prepared(tiny_dataset: Path, workspace: Path) -> Path:
    out = workspace / "prepared"
    code = main(["prepare", str(tiny_dataset), "--output", str(out), "--runs-root", str(workspace / "runs"),
                 "--workers", "1", "--preview", str(workspace / "preview.png")])  # fmt: skip
    assert code == 0
    return out


def test_prepare_caches_faces_reports_bias_and_records_the_run(prepared: Path, workspace: Path) -> None:
    faces = pd.read_csv(prepared / "faces.csv")
    items = pd.read_csv(prepared / "items.csv", keep_default_na=False)
    assert len(faces) == 20 and set(faces["label"]) == {"real", "fake"}
    assert set(faces["method"]) == {"original", "blur"}
    status = dict(zip(items["path"].map(lambda p: Path(p).name), items["status"], strict=True))
    assert status["broken.jpg"] == "error" and status["wall.jpg"] == "no_face"
    assert load_image(prepared / faces["crop"][0]).shape == (224, 224, 3)
    for name in ["bias_report.md", "bias_class_balance.png", "bias_confounds.png", "bias_summary.csv"]:
        assert (prepared / "bias" / name).is_file()
    assert load_image(workspace / "preview.png").shape[1] == 224 * 6
    (record,) = [r for r in list_records(workspace / "runs") if r.name == "prepare"]
    assert (
        record.state == "completed" and record.results["faces"] == 20 and record.results["items_error"] == 1
    )
    assert "class_balance" in record.artifacts and "bias_report" in record.artifacts


def test_prepare_with_a_min_face_fraction_cuts_pre_cropped_faces_identically(
    workspace: Path, capsys: pytest.CaptureFixture
) -> None:
    """Face datasets ship pre-cropped faces (UTKFace: 200 px): the shallow search finds each face as the full
    pyramid does, crop for crop; resuming a folder with another setting would mix two kinds of crops: refused."""
    astronaut = load_image(ASTRONAUT)
    face = crop_face(astronaut, np.array([174.0, 77.0, 274.0, 176.0]), "scale", 200)  # her face, 20% margin
    root = workspace / "face-pictures"
    for i in range(3):
        _write(
            root / "real" / f"p{i}.jpg", np.ascontiguousarray(face[:, ::-1] if i % 2 else face), 75 + 5 * i
        )
        _write(root / "fake" / "blur" / f"p{i}.jpg", cv2.GaussianBlur(face, (0, 0), 1 + i), 90)
    outputs = {}
    for fraction in (None, "0.25"):
        out = workspace / f"pictures-{fraction}"
        args = [
            "prepare",
            str(root),
            "--output",
            str(out),
            "--runs-root",
            str(workspace / "runs"),
            "--workers",
            "1",
        ]
        assert main(args + (["--min-face-fraction", fraction] if fraction else [])) == 0
        outputs[fraction] = (out, pd.read_csv(out / "faces.csv").sort_values("path").reset_index(drop=True))
    (deep_dir, deep), (shallow_dir, shallow) = outputs[None], outputs["0.25"]
    assert len(deep) == 6 and deep["path"].tolist() == shallow["path"].tolist()
    for a, b in zip(deep["crop"], shallow["crop"], strict=True):
        assert np.array_equal(load_image(deep_dir / a), load_image(shallow_dir / b))
    capsys.readouterr()
    resumed = main(["prepare", str(root), "--output", str(deep_dir), "--runs-root", str(workspace / "runs"),
                    "--min-face-fraction", "0.25"])  # fmt: skip
    assert resumed != 0 and "other min_face_fraction" in capsys.readouterr().err


def _train_args(prepared: Path, workspace: Path, out: str, *extra: str) -> list[str]:
    return ["--data", str(prepared), "--output", str(workspace / out), "--runs-root", str(workspace / "runs"),
            "--batch-size", "4", "--steps-per-epoch", "2", "--num-workers", "0", *extra]  # fmt: skip


def test_train_one_epoch_then_resume(prepared: Path, workspace: Path) -> None:
    assert (
        main(
            [
                "train",
                *_train_args(
                    prepared,
                    workspace,
                    "run1",
                    "--epochs",
                    "1",
                    "--self-blend",
                    "0.5",
                    "--equalise-quality",
                    "--precision",
                    "bf16",
                    "--lr-schedule",
                    "cosine",
                ),
            ]
        )
        == 0
    )
    run = workspace / "run1"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0] and history[0]["observed_batch_size"] == 4
    assert (
        (run / "best.pth").is_file()
        and (run / "last.pth").is_file()
        and (run / "learning_curves.png").is_file()
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 4
    assert main(["train", *_train_args(prepared, workspace, "run1", "--epochs", "2")]) == 0
    resumed = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [0, 1] and resumed[0] == history[0]
    # The best checkpoint is a valid model for the detection pipeline.
    from aletheia import DeepfakeDetectorPipeline

    result = DeepfakeDetectorPipeline(model_checkpoint=run / "best.pth").predict(ASTRONAUT)
    assert len(result.faces) == 1 and 0 < result.score < 1


def test_tune_searches_a_grid_and_trains_the_winner(prepared: Path, workspace: Path, capsys) -> None:
    code = main(["tune", *_train_args(prepared, workspace, "tune", "--epochs", "1"),
                 "--param", "lr=1e-3,1e-5", "--param", "batch_size=2,4", "--steps-per-epoch", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    table = pd.read_csv(next((workspace / "runs" / "artifacts").rglob("iteration_results.csv")))
    assert len(table) == 4 and (table["state"] == "completed").all()
    # Every axis took effect: each point trained with the batch size it was given.
    assert (table["output.observed_batch_size"] == table["param.batch_size"]).all()
    best = table.loc[table["output.val_loss"].idxmin()]
    assert "best (min.val_loss)" in out
    winner = yaml.safe_load((workspace / "tune" / "best" / "config.yaml").read_text())
    assert (
        winner["lr"] == pytest.approx(best["param.lr"]) and winner["batch_size"] == best["param.batch_size"]
    )
    names = [r.name for r in list_records(workspace / "runs")]
    assert "tune" in names and "tune-winner" in names
    assert main(["runs", "list", "--runs-root", str(workspace / "runs")]) == 0
    assert "tune-winner" in capsys.readouterr().out


def test_evaluate_writes_a_report(prepared: Path, workspace: Path) -> None:
    run = workspace / "eval-run"
    assert main(["train", *_train_args(prepared, workspace, "eval-run", "--epochs", "1")]) == 0
    out = workspace / "evaluation"
    runs = ["--runs-root", str(workspace / "runs")]
    args = [
        "evaluate",
        "--model",
        str(run / "best.pth"),
        "--data",
        str(prepared),
        "--output",
        str(out),
        *runs,
    ]
    assert main(args) == 0
    assert any((workspace / "runs" / "runs").glob("*.yaml"))  # recorded where asked, not in the checkout
    metrics = json.loads((out / "metrics.json").read_text())
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 20
    from aletheia.evaluation import binary_metrics

    expected = binary_metrics(scores["label"].to_numpy(), scores["score"].to_numpy(), threshold=0.5)
    assert metrics["overall"]["auc"] == pytest.approx(expected["auc"])
    assert (out / "report.md").is_file()


@pytest.mark.slow
def test_two_process_ddp(prepared: Path, workspace: Path) -> None:
    """torchrun with 2 CPU processes (gloo) trains a few steps and rank 0 writes one checkpoint."""
    config = {"data": [str(prepared)], "output": str(workspace / "ddp"), "epochs": 1, "batch_size": 2,
              "steps_per_epoch": 2, "num_workers": 0, "threads": 1}  # fmt: skip
    (workspace / "ddp.yaml").write_text(yaml.safe_dump(config))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29531", "-m", "aletheia.training",
                           "--config", str(workspace / "ddp.yaml")], capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((workspace / "ddp" / "history.json").read_text())
    # Each of the 2 ranks took 2 steps of 2 images: 8 images in the epoch.
    assert (
        len(history) == 1 and history[0]["train_images"] == 8 and (workspace / "ddp" / "best.pth").is_file()
    )


def test_calibrate_stores_temperature_and_threshold_used_by_the_pipeline(
    prepared: Path, workspace: Path, capsys
) -> None:
    run = workspace / "calib-run"
    assert main(["train", *_train_args(prepared, workspace, "calib-run", "--epochs", "1")]) == 0
    out = workspace / "calibrated.pth"
    assert main(["calibrate", "--model", str(run / "best.pth"), "--run-dir", str(run), "--output", str(out),
                 "--target-fpr", "0.0"]) == 0  # fmt: skip
    import torch

    from aletheia import DeepfakeDetectorPipeline

    saved = torch.load(out, weights_only=True)
    assert saved["temperature"] > 0 and saved["architecture"] == "EfficientNetAutoAttLite0"
    calibrated = DeepfakeDetectorPipeline(model_checkpoint=out)
    raw = DeepfakeDetectorPipeline(model_checkpoint=run / "best.pth")
    assert calibrated.threshold == pytest.approx(saved["threshold"]) and raw.threshold == 0.5
    face = load_image(ASTRONAUT)
    # The calibrated logit is the raw one divided by the temperature.
    crop = raw.predict(face).faces[0].crop[None]
    assert calibrated.logits(crop)[0] == pytest.approx(
        raw.logits(crop)[0] / saved["temperature"], rel=1e-4, abs=1e-5
    )
    # Faces are cut at the margin the training and validation crops were cut at, stored with the weights.
    assert saved["crop_margin"] == raw.config.crop_margin == 0.2
    found = calibrated.predict(face).faces[0]
    expected = crop_face(face, found.box, "scale", 224, saved["crop_margin"])
    assert np.array_equal(found.crop, expected)
    # The inconclusive band and the augmentation it was fitted with travel with the weights and decide verdicts.
    low, high = saved["band"]
    assert low <= saved["threshold"] <= high and saved["tta"] == "mirror" and saved["max_spread"] > 0
    assert calibrated.rule.band == (low, high) and not calibrated.rule.default_band
    verdicts = saved["calibration"]["verdicts"]
    assert 0.0 <= verdicts["share_in_band"] <= verdicts["share_inconclusive"] <= 1.0
    assert "inconclusive band" in capsys.readouterr().out
    # With a 0% target, no validation real face may be flagged at the stored threshold.
    val = pd.read_csv(run / "val_faces.csv")
    assert saved["calibration"]["at_threshold"]["fpr"] in (0.0, None) or len(val[val["label"] == "real"]) == 0
    # Half precision: float16 weights, calibrated as rounded, loaded into the float model with scores hardly moved.
    half = workspace / "calibrated-half.pth"
    assert main(["calibrate", "--model", str(run / "best.pth"), "--run-dir", str(run), "--output", str(half),
                 "--target-fpr", "0.0", "--half-precision"]) == 0  # fmt: skip
    saved_half = torch.load(half, weights_only=True)
    assert {t.dtype for t in saved_half["net"].values() if t.is_floating_point()} == {torch.float16}
    assert half.stat().st_size < 0.6 * out.stat().st_size
    rounded = DeepfakeDetectorPipeline(model_checkpoint=half)
    assert rounded.logits(crop)[0] * saved_half["temperature"] == pytest.approx(
        raw.logits(crop)[0], abs=0.02
    )


def test_folder_layout_groups_a_subject_across_real_and_fake(tiny_dataset: Path) -> None:
    from aletheia.data.index import index_dataset

    table = index_dataset(tiny_dataset)
    person3 = table[table["group"] == "person3"]
    assert sorted(person3["label"]) == ["fake", "real"]  # so the split keeps both on one side
