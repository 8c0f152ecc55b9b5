"""Preprocessing stored with the weights: read back by inference, and a caller asking for something else is told."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from aletheia.models.config import ModelConfig
from aletheia.models.preprocessing import (
    Preprocessing,
    PreprocessingError,
    apply_stored,
    training_preprocessing,
)

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"


def _with_metadata(source: Path, target: Path, **metadata) -> Path:
    torch.save({"net": torch.load(source, weights_only=True)["net"], **metadata}, target)
    return target


def test_stored_preprocessing_reaches_the_pipeline_and_a_different_policy_is_warned(
    b4_checkpoint: Path, tmp_path: Path
) -> None:
    from aletheia import DeepfakeDetectorPipeline
    from aletheia.faces.extract import crop_face

    stored = Preprocessing(face_policy="tight", input_size=224, margin=0.1).to_json()
    checkpoint = _with_metadata(b4_checkpoint, tmp_path / "tight.pth", preprocessing=stored)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipeline = DeepfakeDetectorPipeline(model_checkpoint=checkpoint)
    assert pipeline.face_policy == "tight" and pipeline.config.crop_margin == pytest.approx(0.1)
    result = pipeline.predict(ASTRONAUT)
    from aletheia.io import load_image

    image = load_image(ASTRONAUT)
    assert np.array_equal(result.faces[0].crop, crop_face(image, result.faces[0].box, "tight", 224, 0.1))
    with pytest.warns(UserWarning, match="face_policy='tight'"):
        asked = DeepfakeDetectorPipeline(model_checkpoint=checkpoint, face_policy="scale")
    assert asked.face_policy == "scale"


def test_unusable_or_contradicting_settings_are_refused() -> None:
    config = ModelConfig("Some", kinds=("manipulated", "generated"))
    with pytest.raises(PreprocessingError, match="face_policy 'round'"):
        apply_stored(config, {"preprocessing": {"face_policy": "round"}}, "x.pth")
    with pytest.raises(PreprocessingError, match="std"):
        apply_stored(config, {"preprocessing": {"std": [0, 1, 1]}}, "x.pth")
    with pytest.raises(PreprocessingError, match="kinds"):
        apply_stored(config, {"kinds": ["generated"]}, "x.pth")
    calibrated = apply_stored(config, {"crop_margin": 0.05, "preprocessing": {"margin": 0.2}}, "x.pth")
    assert calibrated.crop_margin == 0.05  # the calibrated margin wins over the training one


def test_training_stores_what_its_crops_were_cut_with() -> None:
    config = ModelConfig("Some", input_size=224)
    assert training_preprocessing(config, ["tight"] * 3, [224] * 3).face_policy == "tight"
    assert (
        training_preprocessing(config, ["tight", "scale"], [224, 224]).face_policy == "scale"
    )  # mixed: default
    with pytest.warns(UserWarning, match="cut at \\[256\\] px"):
        training_preprocessing(config, ["scale"], [256])
