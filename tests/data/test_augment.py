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


def _bright_centre(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image.mean(axis=2) > 128)
    return np.array([xs.mean(), ys.mean()])


def test_crop_jitter_moves_the_face_a_little_and_only_when_asked() -> None:
    face = np.zeros((224, 224, 3), dtype=np.uint8)
    face[92:132, 72:152] = 255  # a bright block off the vertical axis is unchanged by a mirror flip's centre
    still = training_augmentation(strength=1.0)
    jittered = training_augmentation(strength=1.0, crop_jitter=0.05)
    still.set_random_seed(0)
    jittered.set_random_seed(0)
    centre = _bright_centre(face)
    unmoved = [np.abs(_bright_centre(still(image=face)["image"]) - centre).max() for _ in range(40)]
    moved = [np.abs(_bright_centre(jittered(image=face)["image"]) - centre).max() for _ in range(40)]
    assert max(unmoved) <= 2.5  # the downscale's resampling alone moves an edge a pixel or two
    # Half the crops move; none further than the 5% shift plus what the scale and the 7.5-degree turn add.
    assert sum(shift > 3.0 for shift in moved) >= 10
    assert max(moved) < 0.05 * 224 + 0.05 * 40 + 6
