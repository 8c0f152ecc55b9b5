"""BlazeFace short range: MediaPipe's 128x128 face detector, reimplemented in PyTorch.

The weights are MediaPipe's `face_detection_short_range.tflite` (Apache-2.0), converted by
`tools/convert_blazeface.py` into `aletheia/assets/blazeface/`. Post-processing follows MediaPipe's face detection
graph: SsdAnchorsCalculator anchors, TensorsToDetectionsCalculator decoding, NonMaxSuppressionCalculator with the
WEIGHTED algorithm (overlapping detections are blended, not just dropped).

Detections are float32 rows of 17 values: x0, y0, x1, y1, six keypoints (x, y) - right eye, left eye, nose tip,
mouth centre, right ear tragion, left ear tragion - and the score. Coordinates are fractions of the input side;
a face cut by the border may reach slightly outside [0, 1] (MediaPipe does not clip either).

The network is fully convolutional: fed a larger image (sides multiples of 16) it yields the same outputs on a
larger anchor grid, which is how aletheia.faces.search runs it over whole photos. aletheia.faces.networks loads the
weights and runs it on torch or ONNX Runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "assets" / "blazeface" / "blazeface_short_range.pth"
INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
# (stride, anchors per cell) of the output maps, in output order.
ANCHOR_LAYOUT = ((8, 2), (16, 6))


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TFLite 'SAME' for sizes divisible by `stride` (all the detectors are fed): any odd pixel goes to
    the bottom/right, whereas PyTorch pads symmetrically. Constant for such sizes, so one ONNX export fits all."""
    total = max(kernel - stride, 0)
    return F.pad(x, [total // 2, total - total // 2] * 2)


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
            shortcut, h = F.max_pool2d(x, self.stride), self.dw(pad_same(x, 3, self.stride))
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
        x = F.relu(self.stem(pad_same(x, 5, 2)))
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
        [
            box_centre - box_half,
            box_centre + box_half,
            keypoints.reshape(*raw.shape[:-1], 2 * NUM_KEYPOINTS),
            scores,
        ],
        axis=-1,
    ).astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
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
        cluster = iou(remaining[0], remaining) > iou_threshold
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
