"""Training augmentation: the quality range and the retouch filter treat every crop alike."""

from __future__ import annotations

import cv2
import numpy as np

from aletheia.data.augment import retouch, training_augmentation


def _textured_face() -> np.ndarray:
    """A flat 'skin' tone with fine noise (pores) and one hard edge."""
    rng = np.random.default_rng(0)
    image = np.full((224, 224, 3), (200, 160, 140), np.float64) + rng.normal(0, 12, (224, 224, 3))
    image[:, 150:] = 40
    return np.clip(image, 0, 255).astype(np.uint8)


def _detail(image: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)[region].var())


def test_retouch_flattens_skin_but_keeps_edges() -> None:
    face = _textured_face()
    np.random.seed(0)
    smooth = retouch(face)
    skin = (slice(20, 200), slice(20, 130))
    assert _detail(smooth, skin) < 0.3 * _detail(face, skin)
    edge_before = np.abs(np.diff(face[:, 145:155].astype(int).mean(axis=(0, 2)))).max()
    edge_after = np.abs(np.diff(smooth[:, 145:155].astype(int).mean(axis=(0, 2)))).max()
    assert edge_after > 0.8 * edge_before


def test_training_augmentation_applies_retouch_only_when_asked() -> None:
    face = _textured_face()
    skin = (slice(20, 200), slice(20, 130))
    always = training_augmentation(strength=0.0, retouch_p=1.0)
    assert _detail(always(image=face)["image"], skin) < 0.3 * _detail(face, skin)
    never = training_augmentation(strength=0.0)
    assert np.array_equal(never(image=face)["image"], face)
    equalised = training_augmentation(strength=0.0, equalise_quality=True)(image=face)["image"]
    assert equalised.shape == face.shape and equalised.dtype == np.uint8
