"""Synthetic make-up on a real face (the astronaut photo in examples/), placed by the bundled face mesh: colour goes
on the lips and around the eyes, the background stays as it was, and the report's fixed look is one look."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aletheia.data.makeup import LIPS_INNER, LIPS_OUTER, apply_makeup, makeup_check
from aletheia.faces.extract import FaceDetector, box_in_crop, crop_face
from aletheia.faces.landmarks import FaceLandmarker

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    image = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    box = FaceDetector().detect(image)[0].box.astype(np.float64)
    crop = crop_face(image, box)
    points = FaceLandmarker().landmarks(crop, box_in_crop(*image.shape[:2], box).astype(np.float64))
    return crop, points[:, :2]


def _lip_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(LIPS_OUTER)]).astype(np.int32)], 1)
    cv2.fillPoly(mask, [np.round(points[list(LIPS_INNER)]).astype(np.int32)], 0)
    return cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)


def test_fixed_look_reddens_the_lips_and_leaves_the_background(face) -> None:
    crop, points = face
    made_up = makeup_check(crop, points)
    assert made_up.shape == crop.shape and made_up.dtype == np.uint8
    lips = _lip_mask(crop.shape[:2], points)
    assert lips.sum() > 50

    def redness(image: np.ndarray) -> float:
        pixels = image[lips].astype(float)
        return float((pixels[:, 0] - pixels[:, 1:].mean(axis=1)).mean())

    assert redness(made_up) > redness(crop) + 15
    # Far from the face (the crop's corners) nothing moves.
    corner = (slice(0, 12), slice(0, 12))
    assert np.array_equal(made_up[corner], crop[corner])
    assert np.array_equal(makeup_check(crop, points), made_up)  # one fixed look


def test_random_looks_differ_and_stay_the_same_face(face) -> None:
    crop, points = face
    looks = [apply_makeup(crop, points, np.random.default_rng(seed)) for seed in range(6)]
    for look in looks:
        assert look.shape == crop.shape
        assert 0 < np.abs(look.astype(int) - crop).mean() < 8  # a few regions, not a new picture
    assert len({look.tobytes() for look in looks}) == len(looks)


def test_makeup_needs_the_face_mesh(face) -> None:
    crop, points = face
    with pytest.raises(ValueError, match="468"):
        apply_makeup(crop, points[:100], np.random.default_rng(0))
