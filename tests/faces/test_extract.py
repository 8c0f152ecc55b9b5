"""Face cropping (the one crop shared by inference and training) and the face search on images of any size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from aletheia.faces.extract import FaceDetector, crop_face, margin_box
from aletheia.io import load_image

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"


def test_margin_box_adds_twice_the_margin_above() -> None:
    np.testing.assert_allclose(margin_box(np.array([100, 100, 200, 300]), 0.2), [80, 20, 220, 340])


def _two_colour_image() -> np.ndarray:
    image = np.zeros((400, 600, 3), dtype=np.uint8)
    image[...] = (0, 0, 255)
    image[100:300, 200:400] = (255, 0, 0)
    return image


def test_scale_policy_is_a_square_around_the_margin_box() -> None:
    image = _two_colour_image()
    # A square margin box equal to the red square: the crop must be all red.
    box = np.array(
        [200 + 200 * 0.2 / 1.4, 100 + 200 * 0.4 / 1.6, 400 - 200 * 0.2 / 1.4, 300 - 200 * 0.2 / 1.6]
    )
    crop = crop_face(image, box, "scale", 224)
    assert crop.shape == (224, 224, 3)
    inner = crop[4:-4, 4:-4].reshape(-1, 3)
    assert (inner[:, 0] > 240).all() and (inner[:, 2] < 15).all()


def test_tight_policy_keeps_aspect_and_pads_black() -> None:
    image = np.full((400, 600, 3), 200, dtype=np.uint8)
    crop = crop_face(image, np.array([100, 100, 300, 180]), "tight", 224, margin=0.0)  # 200 x 80 box
    assert crop.shape == (224, 224, 3)
    rows_with_content = np.where(crop.max(axis=(1, 2)) > 0)[0]
    assert 85 <= len(rows_with_content) <= 95  # 80 * 224 / 200 = 89.6 rows; the rest is black padding
    assert crop[0].max() == 0 and crop[-1].max() == 0


def test_face_at_the_edge_is_shifted_inside_not_padded_or_stretched() -> None:
    image = np.zeros((300, 300, 3), dtype=np.uint8)
    image[:, :100] = 255  # a white band on the left, black elsewhere
    crop = crop_face(image, np.array([-50, 100, 50, 200]), "scale", 100, margin=0.0)
    # The 100 px square is moved inside the image, to x = 0..100: all of it is the white band.
    assert crop.min() == 255


def test_scale_square_larger_than_the_image_shrinks_to_fit() -> None:
    """A pre-cropped face (margins run off the picture) becomes the whole picture, not a black-framed one."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, size=(200, 200, 3), dtype=np.uint8)
    crop = crop_face(image, np.array([30, 40, 170, 190]), "scale", 224)
    np.testing.assert_array_equal(crop, cv2.resize(image, (224, 224), interpolation=cv2.INTER_CUBIC))


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="face policy"):
        crop_face(np.zeros((10, 10, 3), np.uint8), np.array([0, 0, 5, 5]), "wide")  # type: ignore[arg-type]


# -- detection on real pixels ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_image(ASTRONAUT)


def test_one_face_in_the_astronaut(detector: FaceDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.detection_score > 0.75
    # Her face lies in the upper middle of the 512 x 512 photo; eyes above the mouth.
    x0, y0, x1, y1 = face.box
    assert 120 < x0 < x1 < 300 and 20 < y0 < y1 < 260
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[1] < mouth[1] and left_eye[1] < mouth[1]


def test_one_face_in_the_mirrored_astronaut(detector: FaceDetector, astronaut: np.ndarray) -> None:
    # The collar under her chin scores 0.79 at one short-range level in the mirror image; the full-range model,
    # which sees faces of its size, finds nothing there, so it is not taken for a face.
    faces = detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    assert len(faces) == 1, [(f.box.round(), round(f.detection_score, 2)) for f in faces]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_small_faces_in_a_large_photo_are_found_and_mapped_back(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    """Faces of 80 px and up, pasted into a 4000 x 3000 photo, are all found at their true positions."""
    face = detector.detect(astronaut)[0]
    head = margin_box(face.box, 0.6).round().astype(int).clip(0, 511)
    patch = astronaut[head[1] : head[3], head[0] : head[2]]
    rng = np.random.default_rng(0)
    canvas = rng.integers(90, 140, size=(3000, 4000, 3), dtype=np.uint8)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 5)
    expected = []
    for face_width, (x, y) in zip(
        [80, 110, 160, 320, 700],
        [(300, 300), (1900, 2600), (2201, 1103), (3000, 400), (200, 1000)],
        strict=True,
    ):
        factor = face_width / face.width
        resized = cv2.resize(patch, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        h, w = resized.shape[:2]
        canvas[y : y + h, x : x + w] = resized
        expected.append((face.box - np.r_[head[:2], head[:2]]) * factor + np.r_[x, y, x, y])
    found = detector.detect(canvas)
    assert len(found) == len(expected), [f.box.round() for f in found]
    for box in expected:
        assert max(_iou(box, f.box) for f in found) > 0.6, box


@pytest.mark.parametrize("policy", ["scale", "tight"])
def test_box_in_crop_locates_the_face_inside_the_crop(policy: str) -> None:
    from aletheia.faces.extract import box_in_crop

    image = np.zeros((400, 600, 3), dtype=np.uint8)
    box = np.array([250, 150, 330, 250])
    image[150:250, 250:330] = 255  # the face box is white
    crop = crop_face(image, box, policy, 224)
    x0, y0, x1, y1 = box_in_crop(400, 600, box, policy, 224).round().astype(int)
    assert crop[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3].min() > 240
    assert crop[: max(0, y0 - 3)].max() < 15 and crop[y1 + 3 :].max() < 15


def test_face_fraction_tells_pre_cropped_faces_from_faces_in_whole_photos() -> None:
    from aletheia.faces.extract import face_fraction, unclipped_face_fraction

    box = np.array([900.0, 900.0, 1060.0, 1060.0])
    # A face in a big photo: the margin-0.2 crop never reaches the border.
    assert face_fraction(2000, 2000, box) == pytest.approx(unclipped_face_fraction(box)) == pytest.approx(0.625, abs=0.01)
    # A pre-cropped face (the box fills most of the picture): the crop is clipped to the picture, so the face fills more.
    assert face_fraction(180, 180, np.array([10.0, 10.0, 170.0, 170.0])) > 0.85


def _pixels(detector: FaceDetector, height: int, width: int) -> int:
    """Input pixels the search feeds the networks for an image of this size."""
    return sum(
        h * w for h, w in (level.input_shape(height, width) for level in detector.levels(height, width))
    )


def test_min_face_fraction_finds_the_same_face_in_a_pre_cropped_face_with_far_fewer_pixels(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    """A 200-px face crop, as face datasets ship them: the shallow pyramid finds the very same box."""
    face = detector.detect(astronaut)[0]
    head = margin_box(face.box, 0.2).round().astype(int).clip(0, 511)
    crop = cv2.resize(
        astronaut[head[1] : head[3], head[0] : head[2]], (200, 200), interpolation=cv2.INTER_AREA
    )
    shallow = FaceDetector(min_face_fraction=0.25)
    assert _pixels(shallow, 200, 200) * 4 < _pixels(detector, 200, 200)
    full, fast = detector.detect(crop), shallow.detect(crop)
    assert len(full) == len(fast) == 1
    np.testing.assert_array_equal(fast[0].box, full[0].box)
    with pytest.raises(ValueError, match="min_face_fraction"):
        FaceDetector(min_face_fraction=0.0)


def test_levels_run_whole_images_from_the_smallest_wanted_face_up() -> None:
    """1080p: a short-range level where 40 px faces are 16 px, coarser ones a factor 3 apart down to 128 px, the
    zoomed-out level and two full-range levels; in all 4.3x fewer input pixels than the 156 overlapping tiles."""
    detector = FaceDetector()
    levels = detector.levels(1080, 1920)
    short = [lv for lv in levels if lv.spec.name == "short-range" and lv.canvas is None]
    assert [round(lv.scale * 1920) for lv in short] == [768, 256, 128]
    assert [lv.max_face for lv in short][-1] == float("inf") and short[0].max_face < 96
    assert [lv.input_shape(1080, 1920) for lv in short] == [(432, 768), (144, 256), (80, 128)]
    assert [round(lv.scale * 1920) for lv in levels if lv.spec.name == "full-range"] == [192, 384]
    assert _pixels(detector, 1080, 1920) * 4 < 156 * 128 * 128


def test_a_face_cut_by_the_frame_edge_is_found(detector: FaceDetector, astronaut: np.ndarray) -> None:
    face = detector.detect(astronaut)[0]
    x0, _, x1, _ = face.box.round().astype(int)
    cut = np.ascontiguousarray(
        astronaut[:, x0 + (x1 - x0) // 3 :]
    )  # a third of her face is outside the frame
    found = detector.detect(cut)
    assert len(found) == 1 and found[0].box[0] < 5


def test_noise_and_flat_images_have_no_faces(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 2)
    assert detector.detect(noise) == []
    assert detector.detect(np.full((300, 500, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_two_threads_find_what_one_finds(astronaut: np.ndarray) -> None:
    """The levels searched on two threads (the costliest here, the rest in a pool thread) give the very same faces."""
    rng = np.random.default_rng(1)
    photo = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 8)
    for side, (x, y) in zip([300, 400, 800], [(50, 100), (450, 600), (1100, 200)], strict=True):
        photo[y : y + side, x : x + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    one, two = FaceDetector(threads=1), FaceDetector(threads=2)
    assert (one._workers, two._workers) == (1, 2)
    found = [two.detect(photo) for _ in range(3)]
    expected = one.detect(photo)
    assert len(expected) == 3
    for faces in found:
        assert len(faces) == len(expected)
        for a, b in zip(faces, expected, strict=True):
            np.testing.assert_array_equal(a.box, b.box)
            assert a.detection_score == b.detection_score


def test_searches_from_several_threads_at_once_share_the_pool(astronaut: np.ndarray) -> None:
    """Callers in threads of their own (a folder's workers, a server's requests) each get their own faces."""
    from concurrent.futures import ThreadPoolExecutor

    images = [cv2.resize(astronaut, (w, w)) for w in (300, 512, 700, 900)] + [
        np.zeros((200, 300, 3), np.uint8)
    ]
    expected = [[f.box.tolist() for f in FaceDetector(threads=1).detect(image)] for image in images]
    two = FaceDetector(threads=2)
    with ThreadPoolExecutor(3) as callers:
        found = list(callers.map(lambda image: [f.box.tolist() for f in two.detect(image)], images * 3))
    assert found == expected * 3 and [len(e) for e in expected] == [1, 1, 1, 1, 0]


def test_shared_work_returns_every_result_and_raises_a_pool_threads_error() -> None:
    from aletheia.faces.extract import _share_work

    assert _share_work(lambda i: np.array([i * i]), list(range(7)), 2) == {
        i: np.array([i * i]) for i in range(7)
    }

    def fails_on_the_cheapest(i: int) -> np.ndarray:
        if i == 6:  # the last item: a pool thread takes it first, unless this thread got there before
            raise RuntimeError("level 6 failed")
        return np.zeros(1)

    with pytest.raises(RuntimeError, match="level 6 failed"):
        _share_work(fails_on_the_cheapest, list(range(7)), 2)


def test_level_inputs_are_made_from_one_another_by_whole_factors(astronaut: np.ndarray) -> None:
    """A whole-factor step is OpenCV's area average of the image itself; the rest is a linear step under 2x."""
    from aletheia.faces.extract import _Downscaler

    image = cv2.resize(astronaut, (1920, 1080))
    downscaler = _Downscaler(image)
    finest = downscaler.resized(768, 432)  # 1920 -> 960 by averaging 2x2, then 960 -> 768 linearly
    half = cv2.resize(image, (960, 540), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(finest, cv2.resize(half, (768, 432), interpolation=cv2.INTER_LINEAR))
    third = downscaler.resized(256, 144)  # from the 768 px copy, 3x3 averages
    np.testing.assert_array_equal(third, cv2.resize(finest, (256, 144), interpolation=cv2.INTER_AREA))
    odd = _Downscaler(image[:1079, :1917]).resized(639, 359)  # 3x: the 1079th row is dropped, not averaged in
    np.testing.assert_array_equal(
        odd, cv2.resize(image[:1077, :1917], (639, 359), interpolation=cv2.INTER_AREA)
    )
