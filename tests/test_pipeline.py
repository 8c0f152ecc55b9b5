"""The pipeline end to end on real pixels with a real (randomly initialised, saved and reloaded) B4 checkpoint."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aletheia import DeepfakeDetectorPipeline, InputError
from aletheia.faces.extract import crop_face
from aletheia.models.checkpoints import CheckpointError

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"


@pytest.fixture(scope="session")
def pipeline(b4_checkpoint: Path) -> DeepfakeDetectorPipeline:
    return DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint, batch_size=4)


def _group_photo() -> np.ndarray:
    """Three copies of the astronaut side by side: three faces."""
    astronaut = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    return np.concatenate([astronaut, astronaut[:, ::-1], astronaut], axis=1)


def test_predict_returns_scored_faces_in_original_pixels(pipeline: DeepfakeDetectorPipeline) -> None:
    result = pipeline.predict(ASTRONAUT)
    assert pipeline.model_label == "EfficientNetAutoAttB4_DFDC_bestval.pth"
    assert pipeline.config.name == "EfficientNetAutoAttB4"
    assert result.label in ("fake", "real", "inconclusive") and len(result.faces) == 1
    face = result.faces[0]
    assert 0.0 < face.score < 1.0 and face.detection_score > 0.75
    assert face.crop.shape == (224, 224, 3) and face.keypoints.shape == (6, 2)
    assert 100 < face.box[0] < face.box[2] < 320
    assert result.score == face.score


def test_scores_do_not_depend_on_batching_or_input_type(pipeline: DeepfakeDetectorPipeline) -> None:
    group = _group_photo()
    batched = pipeline.predict(group)
    assert len(batched.faces) == 3
    one_by_one = [pipeline.score_crops(f.crop[None])[0] for f in batched.faces]
    np.testing.assert_allclose([f.score for f in batched.faces], one_by_one, rtol=1e-4, atol=1e-6)
    from_pil = pipeline.predict(Image.fromarray(group))
    np.testing.assert_allclose([f.score for f in from_pil.faces], [f.score for f in batched.faces], atol=1e-6)


def test_score_matches_the_model_on_the_shared_crop(pipeline: DeepfakeDetectorPipeline) -> None:
    """The pipeline's score is the model's sigmoid on crop_face's crop, normalised with the model's config."""
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    face = pipeline.predict(image).faces[0]
    crop = crop_face(image, face.box, "scale", 224)
    np.testing.assert_array_equal(crop, face.crop)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (pipeline.config.mean, pipeline.config.std))
    with torch.inference_mode():
        expected = torch.sigmoid(pipeline.classifier((x - mean) / std)).item()
    assert face.score == pytest.approx(expected, abs=1e-5)


def test_attention_maps_on_request(pipeline: DeepfakeDetectorPipeline) -> None:
    result = pipeline.predict(ASTRONAUT, return_attention=True)
    attention = result.faces[0].attention
    assert attention.shape == (28, 28) and 0.0 <= attention.min() <= attention.max() <= 1.0


def test_no_face_and_assume_face(pipeline: DeepfakeDetectorPipeline) -> None:
    blank = np.full((300, 400, 3), 128, dtype=np.uint8)
    result = pipeline.predict(blank)
    assert result.label == "no_face" and result.score is None and result.faces == []
    assumed = pipeline.predict(blank, assume_face=True)
    assert len(assumed.faces) == 1 and assumed.faces[0].box.tolist() == [0, 0, 400, 300]


def test_threshold_sets_the_label(b4_checkpoint: Path, pipeline: DeepfakeDetectorPipeline) -> None:
    """Far below the score: fake; far above: real; next to it, inside the band around the threshold: inconclusive."""
    result = pipeline.predict(ASTRONAUT)
    assert result.faces[0].spread is not None and result.faces[0].spread <= pipeline.rule.max_spread
    logit = math.log(result.score / (1 - result.score))
    labels = {}
    for shift in (-2.0, -0.01, 0.01, 2.0):  # in logit space; the default band is +-0.5 around the threshold
        judged = dataclasses.replace(result, threshold=1 / (1 + math.exp(-(logit - shift))))
        labels[shift] = judged.label
        low, high = judged.band
        assert low < judged.threshold < high
    assert labels == {-2.0: "real", -0.01: "inconclusive", 0.01: "inconclusive", 2.0: "fake"}
    at_zero = DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint, threshold=0.0).predict(ASTRONAUT)
    assert at_zero.label == "fake" and at_zero.band == (0.0, 0.0)  # no band at the ends of the scale


def test_predict_many_reports_bad_files_and_goes_on(
    pipeline: DeepfakeDetectorPipeline, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not really a jpeg")
    results = list(pipeline.predict_many([ASTRONAUT, bad, ASTRONAUT]))
    assert [r.label for r in results][1] == "error" and "bad.jpg" in results[1].error
    assert results[0].score == pytest.approx(results[2].score)
    with pytest.raises(InputError, match="bad.jpg"):
        pipeline.predict(bad)


def test_model_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="weights download"):
        DeepfakeDetectorPipeline(model_name="EfficientNetAutoAttB4_DFDC")
    with pytest.raises(CheckpointError, match="without trained weights"):
        DeepfakeDetectorPipeline(model_name="EfficientNetAutoAttB4")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        DeepfakeDetectorPipeline(model_checkpoint=tmp_path / "missing.pth")


def test_backends_give_the_same_scores(b4_checkpoint: Path, pipeline: DeepfakeDetectorPipeline) -> None:
    assert pipeline.backend == "onnx"  # the CPU default
    group = _group_photo()
    reference = [f.score for f in pipeline.predict(group).faces]
    for backend in ("torch", "openvino"):
        other = DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint, backend=backend)
        np.testing.assert_allclose([f.score for f in other.predict(group).faces], reference, atol=1e-5)
