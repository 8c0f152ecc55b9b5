"""Training augmentation treats every crop alike; the quality range keeps crops the model's size and type."""

from __future__ import annotations

import numpy as np

from aletheia.data.augment import training_augmentation


def test_training_augmentation_changes_nothing_at_strength_zero_unless_equalising() -> None:
    face = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    never = training_augmentation(strength=0.0)
    assert np.array_equal(never(image=face)["image"], face)
    equalised = training_augmentation(strength=0.0, equalise_quality=True)(image=face)["image"]
    assert equalised.shape == face.shape and equalised.dtype == np.uint8
    assert not np.array_equal(equalised, face)  # always re-encoded
