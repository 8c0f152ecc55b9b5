"""The bundled default model: small enough to ship, calibrated, the same scores on every backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aletheia.models.loader import DEFAULT_MODEL

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"
pytestmark = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file(), reason="no default model bundled in this checkout"
)


def test_bundled_weights_are_small_calibrated_and_documented() -> None:
    assert DEFAULT_MODEL.stat().st_size <= 30 * 2**20
    saved = torch.load(DEFAULT_MODEL, weights_only=True)
    assert saved["architecture"] == "EfficientNetAutoAttLite2Kinds"  # a score per kind of fake
    assert {t.dtype for t in saved["net"].values() if t.is_floating_point()} == {torch.float16}  # half the file
    assert 0.0 < saved["threshold"] < 1.0 and saved["temperature"] > 0
    assert (DEFAULT_MODEL.parent / "MODEL_CARD.md").is_file()


def test_the_stored_calibration_reaches_the_pipeline() -> None:
    """Threshold, temperature and crop margin written by `aletheia calibrate` are what inference uses."""
    from aletheia import DeepfakeDetectorPipeline
    from aletheia.faces.extract import crop_face
    from aletheia.io import load_image

    saved = torch.load(DEFAULT_MODEL, weights_only=True)
    pipeline = DeepfakeDetectorPipeline()
    assert pipeline.threshold == pytest.approx(saved["threshold"])
    assert pipeline.config.temperature == pytest.approx(saved["temperature"])
    # The margin the training crops were cut at: thresholds fitted on those crops hold for the faces inference cuts.
    assert pipeline.config.crop_margin == pytest.approx(saved["crop_margin"]) == saved["preprocessing"]["margin"]
    image = load_image(ASTRONAUT)
    face = pipeline.predict(image).faces[0]
    assert np.array_equal(face.crop, crop_face(image, face.box, "scale", 224, saved["crop_margin"]))


def test_default_model_scores_match_across_backends_and_never_call_the_astronaut_fake() -> None:
    from aletheia import DeepfakeDetectorPipeline

    results = {
        b: DeepfakeDetectorPipeline(backend=b).predict(ASTRONAUT) for b in ("torch", "onnx", "openvino")
    }
    scores = {b: [[f.score, *f.scores.values()] for f in r.faces] for b, r in results.items()}
    np.testing.assert_allclose(scores["onnx"], scores["torch"], atol=1e-4)
    np.testing.assert_allclose(scores["openvino"], scores["torch"], atol=1e-4)
    # A real (public-domain NASA) photo: never called fake; v8.1 leaves it in its inconclusive band (0.36).
    assert results["onnx"].label in ("real", "inconclusive")
    assert results["onnx"].score < results["onnx"].threshold
    assert set(results["onnx"].faces[0].scores) == {"manipulated", "generated"}
