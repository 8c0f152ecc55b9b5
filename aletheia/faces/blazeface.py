"""BlazeFace short range: MediaPipe's 128x128 face detector, reimplemented in PyTorch.

The weights are MediaPipe's `face_detection_short_range.tflite` (Apache-2.0), converted by
`tools/convert_blazeface.py` into `aletheia/assets/blazeface/`. Post-processing follows MediaPipe's face detection
graph: SsdAnchorsCalculator anchors, TensorsToDetectionsCalculator decoding, NonMaxSuppressionCalculator with the
WEIGHTED algorithm (overlapping detections are blended, not just dropped).

Detections are float32 rows of 17 values: x0, y0, x1, y1, six keypoints (x, y) - right eye, left eye, nose tip,
mouth centre, right ear tragion, left ear tragion - and the score. Coordinates are fractions of the input side;
a face cut by the border may reach slightly outside [0, 1] (MediaPipe does not clip either).

On the CPU the network runs on ONNX Runtime by default (`backend="auto"`): exported once, cached under a hash of
the weights, it matches torch to float rounding and is faster on the many small batches of a tile pyramid.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "assets" / "blazeface" / "blazeface_short_range.pth"
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
ONNX_OPSET = 17
# Bump when the exported graph changes for the same weights, so stale cache files are not reused.
_EXPORT_VERSION = 1


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TFLite 'SAME': any odd pixel goes to the bottom/right, whereas PyTorch pads symmetrically."""
    padding = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        padding += [total // 2, total - total // 2]
    return F.pad(x, padding)


class BlazeBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, added to a shortcut, then ReLU.

    With stride 2 the shortcut is a 2x2 max-pool; when the block widens, the shortcut is zero-padded with the extra
    channels (TFLite's `channel_padding`), so it costs no weights.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.dw = nn.Conv2d(
            in_channels, in_channels, 3, stride, padding=1 if stride == 1 else 0, groups=in_channels
        )
        self.pw = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, h = x, self.dw(x)
        else:
            # Even input sizes only (always so at 128 px): TFLite's SAME max-pool then needs no padding.
            shortcut, h = F.max_pool2d(x, self.stride), self.dw(_pad_same(x, 3, self.stride))
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(self.pw(h) + shortcut)


# (in, out, stride) of each block; the heads look at the outputs of both groups.
_STRIDE8_BLOCKS = [(24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
                   (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1)]  # fmt: skip
_STRIDE16_BLOCKS = [(88, 96, 2)] + [(96, 96, 1)] * 4


class BlazeFace(nn.Module):
    """The short-range network: N x 3 x 128 x 128 in [-1, 1] -> raw (regressors [N,896,16], classificators [N,896,1]).

    Anchor order matches TFLite: the 16x16 map (2 anchors per cell) first, then the 8x8 map (6 per cell), each
    row-major with the anchors of one cell adjacent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, stride=2)
        self.stride8 = nn.Sequential(*(BlazeBlock(i, o, s) for i, o, s in _STRIDE8_BLOCKS))
        self.stride16 = nn.Sequential(*(BlazeBlock(i, o, s) for i, o, s in _STRIDE16_BLOCKS))
        self.classifier8 = nn.Conv2d(88, 2, 1)
        self.regressor8 = nn.Conv2d(88, 2 * 16, 1)
        self.classifier16 = nn.Conv2d(96, 6, 1)
        self.regressor16 = nn.Conv2d(96, 6 * 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(_pad_same(x, 5, 2)))
        f8 = self.stride8(x)
        f16 = self.stride16(f8)

        def flat(t: torch.Tensor, values: int) -> torch.Tensor:
            """NCHW -> N x (H*W*anchors) x values, in TFLite's (NHWC) order."""
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, values)

        regressors = torch.cat([flat(self.regressor8(f8), 16), flat(self.regressor16(f16), 16)], dim=1)
        classificators = torch.cat([flat(self.classifier8(f8), 1), flat(self.classifier16(f16), 1)], dim=1)
        return regressors, classificators


def generate_anchors(
    input_size: int = 128,
    strides: Sequence[int] = (8, 16, 16, 16),
    min_scale: float = 0.1484375,
    max_scale: float = 0.75,
    anchor_offset: float = 0.5,
    aspect_ratios: Sequence[float] = (1.0,),
    interpolated_scale_aspect_ratio: float = 1.0,
    fixed_anchor_size: bool = True,
) -> np.ndarray:
    """Anchors (x_center, y_center, w, h) as MediaPipe's SsdAnchorsCalculator makes them; defaults: short range.

    Layers with the same stride share one feature map, so their anchors are interleaved per cell.
    """
    num_layers = len(strides)

    def scale_at(layer: int) -> float:
        if num_layers == 1:
            return (min_scale + max_scale) / 2
        return min_scale + (max_scale - min_scale) * layer / (num_layers - 1)

    anchors: list[tuple[float, float, float, float]] = []
    layer = 0
    while layer < num_layers:
        sizes: list[tuple[float, float]] = []  # (w, h) of the anchors in one cell
        last = layer
        while last < num_layers and strides[last] == strides[layer]:
            scale = scale_at(last)
            cell = [(scale, ratio) for ratio in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0:
                next_scale = 1.0 if last == num_layers - 1 else scale_at(last + 1)
                cell.append((math.sqrt(scale * next_scale), interpolated_scale_aspect_ratio))
            sizes += [(s * math.sqrt(r), s / math.sqrt(r)) for s, r in cell]
            last += 1
        side = math.ceil(input_size / strides[layer])
        for y in range(side):
            for x in range(side):
                for w, h in sizes:
                    size = (1.0, 1.0) if fixed_anchor_size else (w, h)
                    anchors.append(((x + anchor_offset) / side, (y + anchor_offset) / side, *size))
        layer = last
    return np.asarray(anchors, dtype=np.float32)


def decode(
    regressors: np.ndarray, classificators: np.ndarray, anchors: np.ndarray, scale: float = 128.0
) -> np.ndarray:
    """Raw outputs [..., 896, 16] and [..., 896, 1] -> detections [..., 896, 17] (TensorsToDetectionsCalculator).

    Offsets are in input pixels, relative to the anchor centre; scores are clipped to +-100 (as MediaPipe does),
    then squashed with a sigmoid.
    """
    raw = regressors.astype(np.float32) / scale
    centre, size = anchors[:, :2], anchors[:, 2:]
    box_centre = raw[..., 0:2] * size + centre
    box_half = raw[..., 2:4] * size / 2
    keypoints = raw[..., 4:].reshape(*raw.shape[:-1], NUM_KEYPOINTS, 2) * size[:, None] + centre[:, None]
    # float64: exp(100) would overflow float32 (harmlessly, but with a warning).
    logits = np.clip(classificators.astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    return np.concatenate(
        [box_centre - box_half, box_centre + box_half, keypoints.reshape(*raw.shape[:-1], -1), scores],
        axis=-1,
    ).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x0, y0, x1, y1) with each of `boxes`; 0 where nothing overlaps."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(detections: np.ndarray, iou_threshold: float = 0.3) -> np.ndarray:
    """MediaPipe's WEIGHTED non-maximum suppression on rows of (x0, y0, x1, y1, ..., score).

    Take the best remaining detection; every remaining one overlapping it by IoU > threshold (itself included)
    joins its cluster; the output row is the score-weighted mean of the cluster's coordinates and keypoints, with
    the best score. Blending the cluster steadies boxes from frame to frame. Output is sorted by score, descending.
    """
    remaining = detections[np.argsort(-detections[:, -1], kind="stable")]
    kept = []
    while len(remaining):
        cluster = _iou(remaining[0], remaining) > iou_threshold
        cluster[0] = True  # a box always joins its own cluster (MediaPipe stalls on a zero-area box instead)
        members = remaining[cluster]
        weights = members[:, -1:]
        blended = remaining[0].copy()
        blended[:-1] = (members[:, :-1] * weights).sum(axis=0) / weights.sum()
        kept.append(blended)
        remaining = remaining[~cluster]
    if not kept:
        return np.zeros((0, detections.shape[1]), dtype=np.float32)
    return np.stack(kept).astype(np.float32)


def postprocess(
    regressors: np.ndarray,
    classificators: np.ndarray,
    anchors: np.ndarray,
    score_threshold: float = 0.75,
    nms_iou: float = 0.3,
    input_size: int = 128,
) -> list[np.ndarray]:
    """Raw batch outputs -> per image, detections (K, 17) above the threshold after weighted NMS."""
    results = []
    for dets in decode(regressors, classificators, anchors, float(input_size)):
        # MediaPipe drops boxes the model decoded with negative size; we also drop empty ones (keeps x0 < x1).
        keep = (dets[:, -1] >= score_threshold) & (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])
        results.append(weighted_nms(dets[keep], nms_iou))
    return results


@lru_cache(maxsize=1)
def _shipped_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)


def _shipped_model() -> BlazeFace:
    model = BlazeFace()
    model.load_state_dict(_shipped_state_dict())
    return model.eval()


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], as MediaPipe feeds it."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class _Uint8Input(nn.Module):
    """BlazeFace taking the detector's own input, uint8 N x 128 x 128 x 3, so ONNX does the normalisation too."""

    def __init__(self, model: BlazeFace) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(_normalise(images))


@lru_cache(maxsize=1)
def blazeface_onnx_path() -> Path:
    """The shipped BlazeFace as ONNX (uint8 NHWC in, dynamic batch), exported at most once per weights and cache.

    Lives in `$ALETHEIA_CACHE/onnx` (or `~/.cache/aletheia/onnx`), named by a SHA-256 of the weights; written
    atomically, so concurrent processes at worst export twice, never read half a file.
    """
    from aletheia.models.runtime import default_onnx_cache_dir  # lazy: keeps `faces` light to import

    digest = hashlib.sha256(f"blazeface|v{_EXPORT_VERSION}|opset{ONNX_OPSET}".encode())
    for key, tensor in _shipped_state_dict().items():
        digest.update(f"|{key}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    path = default_onnx_cache_dir() / f"blazeface-short-range-{digest.hexdigest()}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    size = BlazeFaceDetector.INPUT_SIZE
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated and chatty
            torch.onnx.export(
                _Uint8Input(_shipped_model()),
                # Batch 2, not 1: tracing at 1 risks a batch dimension folded into a constant.
                (torch.zeros(2, size, size, 3, dtype=torch.uint8),),
                tmp_name,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["images"],
                output_names=["regressors", "classificators"],
                dynamic_axes={name: {0: "batch"} for name in ("images", "regressors", "classificators")},
            )
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


class BlazeFaceDetector:
    """Faces in batches of 128x128 RGB uint8 images (letterbox larger images first; see aletheia.faces.extract).

    `backend`: "torch", "onnx" (ONNX Runtime, CPU only) or "auto": ONNX on the CPU, torch on other devices.
    """

    INPUT_SIZE = 128

    def __init__(
        self,
        score_threshold: float = 0.75,
        nms_iou: float = 0.3,
        device: str | torch.device = "cpu",
        backend: Backend = "auto",
    ) -> None:
        """`nms_iou` is MediaPipe's min_suppression_threshold: boxes overlapping more than this are merged."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown BlazeFace backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.device = torch.device(device)
        if backend == "auto":
            backend = "onnx" if self.device.type == "cpu" else "torch"
        if backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"the onnx BlazeFace backend runs on the CPU only, not {self.device}")
        self.backend: str = backend
        self.model: BlazeFace | None = None
        self._session = None
        if backend == "torch":
            self.model = _shipped_model().to(self.device)
        else:
            from aletheia.onnxrt import cpu_session

            self._session = cpu_session(blazeface_onnx_path())
        self.anchors = generate_anchors(self.INPUT_SIZE)

    def _check(self, images: np.ndarray) -> np.ndarray:
        size = self.INPUT_SIZE
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 RGB images N x {size} x {size} x 3, got {images.dtype} {images.shape}"
            )
        return np.ascontiguousarray(images)

    def raw_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's raw (regressors [N,896,16], classificators [N,896,1]) as float32 numpy."""
        images = self._check(images)
        if not len(images):  # both backends' reshapes fail on an empty batch (-1 of 0 elements is ambiguous)
            return np.zeros((0, NUM_ANCHORS, 16), np.float32), np.zeros((0, NUM_ANCHORS, 1), np.float32)
        if self._session is not None:
            regressors, classificators = self._session.run(None, {"images": images})
            return regressors, classificators
        with torch.inference_mode():
            regressors, classificators = self.model(_normalise(torch.from_numpy(images).to(self.device)))
        return regressors.cpu().numpy(), classificators.cpu().numpy()

    def detect(self, images: np.ndarray) -> list[np.ndarray]:
        """Per image, float32 (K, 17) detections [x0, y0, x1, y1, kp0x, kp0y, ..., kp5x, kp5y, score], best first."""
        if len(images) == 0:
            return []
        regressors, classificators = self.raw_outputs(images)
        return postprocess(
            regressors, classificators, self.anchors, self.score_threshold, self.nms_iou, self.INPUT_SIZE
        )
