"""Models that score each kind of fake: column 0 is "fake of any kind" (a noisy-or of the kinds), everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aletheia.models.checkpoints import infer_architecture, load_checkpoint
from aletheia.models.efficientnet import noisy_or_logit
from aletheia.models.registry import create_model
from aletheia.training.loop import training_loss, widen_head


def test_noisy_or_logit_is_the_probability_of_any_kind() -> None:
    logits = torch.tensor([[-2.0, 1.0], [0.0, 0.0], [-9.0, -9.0], [6.0, -3.0]])
    p = torch.sigmoid(logits)
    expected = 1 - (1 - p[:, 0]) * (1 - p[:, 1])
    assert torch.allclose(torch.sigmoid(noisy_or_logit(logits))[:, 0], expected, atol=1e-4)
    assert torch.isfinite(noisy_or_logit(torch.full((1, 2), -40.0))).all()


@pytest.fixture(scope="module")
def kinds_model() -> torch.nn.Module:
    return create_model("EfficientNetAutoAttLite0Kinds", pretrained=False).eval()


def test_kinds_model_outputs_overall_then_one_logit_per_kind_and_is_recognised(kinds_model) -> None:
    out = kinds_model(torch.randn(3, 3, 224, 224))
    assert out.shape == (3, 3)
    assert torch.allclose(out[:, :1], noisy_or_logit(out[:, 1:]), atol=1e-5)
    assert kinds_model.config.kinds == ("manipulated", "generated")
    assert infer_architecture(kinds_model.state_dict()) == "EfficientNetAutoAttLite0Kinds"
    single = create_model("EfficientNetAutoAttLite0", pretrained=False)
    assert infer_architecture(single.state_dict()) == "EfficientNetAutoAttLite0"


def test_a_one_logit_model_widens_into_a_kinds_model_that_starts_near_it(kinds_model) -> None:
    torch.manual_seed(0)
    single = create_model("EfficientNetAutoAttLite0", pretrained=False).eval()
    widened = create_model("EfficientNetAutoAttLite0Kinds", pretrained=False)
    load_checkpoint(widened, widen_head(single.state_dict(), widened))
    widened.eval()
    x = torch.randn(2, 3, 224, 224)
    one, both = torch.sigmoid(single(x))[:, 0], torch.sigmoid(widened(x))
    assert torch.allclose(both[:, 1], both[:, 2])  # every kind starts as the one logit
    assert torch.allclose(both[:, 0], one, atol=0.1)  # and "any kind" near it


def test_training_loss_masks_each_kind_head_to_reals_and_its_own_kind() -> None:
    # A generated fake says nothing about the manipulated head: moving that logit must not change the loss.
    kinds = torch.tensor([0, 1, 2])
    base = torch.tensor([[0.0, -1.0, -1.0], [0.0, 2.0, -1.0], [0.0, -1.0, 2.0]])
    moved = base.clone()
    moved[2, 1] = 5.0  # manipulated head on the generated fake
    moved[1, 2] = 5.0  # generated head on the manipulated fake
    assert training_loss(base, kinds) == pytest.approx(float(training_loss(moved, kinds)))
    worse = base.clone()
    worse[2, 2] = -4.0  # generated head doubting the generated fake
    assert training_loss(worse, kinds) > training_loss(base, kinds)
    one_logit = torch.tensor([[0.5], [1.0]])
    assert training_loss(one_logit, torch.tensor([0, 2])) > 0  # one-output models: plain BCE on real vs fake


def test_pipeline_reports_a_score_per_kind_in_json(tmp_path, kinds_model) -> None:
    from aletheia.pipeline import DeepfakeDetectorPipeline

    path = tmp_path / "kinds.pth"
    torch.save({"net": kinds_model.state_dict(), "architecture": "EfficientNetAutoAttLite0Kinds"}, path)
    for backend in ("torch", "onnx"):
        pipeline = DeepfakeDetectorPipeline(model_checkpoint=path, backend=backend)
        crops = np.random.default_rng(0).integers(0, 255, size=(2, 224, 224, 3), dtype=np.uint8)
        overall, per_kind = pipeline.logits_by_kind(crops)
        assert per_kind.shape == (2, 2)
        p = 1 / (1 + np.exp(-per_kind))
        assert np.allclose(1 / (1 + np.exp(-overall)), 1 - (1 - p[:, 0]) * (1 - p[:, 1]), atol=1e-4)
        result = pipeline.predict(crops[0], assume_face=True)
        face = result.to_json()["faces"][0]
        assert set(face["scores"]) == {"manipulated", "generated"}
        assert result.to_json()["scores"] == face["scores"]
        assert face["score"] >= max(face["scores"].values()) - 1e-6


def test_cli_shows_the_per_kind_scores_in_every_format(tmp_path, kinds_model, capsys) -> None:
    import csv
    import json

    from aletheia.cli import main

    checkpoint = tmp_path / "kinds.pth"
    torch.save({"net": kinds_model.state_dict(), "architecture": "EfficientNetAutoAttLite0Kinds"}, checkpoint)
    astronaut = "examples/astronaut.jpg"
    common = ["detect", astronaut, "--model", str(checkpoint), "--assume-face", "--no-progress"]
    assert main([*common, "--format", "table"]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[:4] == ["label", "score", "manip.", "gen."]
    manipulated, generated = map(float, row.split()[2:4])
    assert main([*common, "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["scores"] == pytest.approx({"manipulated": manipulated, "generated": generated}, abs=1e-3)
    out = tmp_path / "r.csv"
    assert main([*common, "--format", "csv", "--output", str(out)]) == 0
    (line,) = list(csv.DictReader(out.open()))
    assert json.loads(line["scores"]) == record["scores"]


def test_web_app_verdict_lists_each_kind_for_every_face() -> None:
    from aletheia.results import FaceResult, ImageResult
    from aletheia.serving.service import Detection
    from aletheia.serving.webapp import verdict_markdown

    face = FaceResult(np.zeros(4), np.zeros((6, 2)), 0.9, score=0.82, scores={"manipulated": 0.1, "generated": 0.8})
    result = ImageResult(path="p.jpg", threshold=0.5, model="m", faces=[face])
    text = verdict_markdown(Detection(np.zeros((4, 4, 3), np.uint8), result))
    assert "| face | fake probability | manipulated | generated | spread | call | warnings |" in text
    assert "| #1 | 0.820 | 0.100 | 0.800 | - | fake | - |" in text
    plain = ImageResult(path="p.jpg", threshold=0.5, model="m", faces=[FaceResult(np.zeros(4), np.zeros((6, 2)), 0.9, 0.2)])
    plain_text = verdict_markdown(Detection(np.zeros((4, 4, 3), np.uint8), plain))
    assert "| face | fake probability | spread | call | warnings |" in plain_text


def test_videos_score_each_kind_per_face_and_per_person(tmp_path, kinds_model) -> None:
    from aletheia.pipeline import DeepfakeDetectorPipeline
    from aletheia.video import VideoDetector
    from aletheia.video.tracks import score_track
    from tests.test_video import _moving_astronaut, write_video

    checkpoint = tmp_path / "kinds.pth"
    torch.save({"net": kinds_model.state_dict(), "architecture": "EfficientNetAutoAttLite0Kinds"}, checkpoint)
    video = write_video(tmp_path / "a.mp4", _moving_astronaut(), fps=6) or tmp_path / "a.mp4"
    result = VideoDetector(DeepfakeDetectorPipeline(model_checkpoint=checkpoint), num_frames=6).predict(video)
    record = result.to_json()
    faces = [face for frame in result.frames for face in frame.faces]
    track = record["tracks"][0]
    for k, kind in enumerate(("manipulated", "generated")):
        expected = score_track([f.kind_logits[k] for f in faces])
        assert track["scores"][kind] == pytest.approx(expected, abs=1e-6)
        assert record["scores"][kind] == track["scores"][kind]
    assert all(set(f["faces"][0]["scores"]) == {"manipulated", "generated"} for f in record["frames"])
