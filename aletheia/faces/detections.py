"""BlazeFace outputs to detections, without torch: both networks' layouts, MediaPipe's anchors, decoding and NMS.

Post-processing follows MediaPipe's face detection graph: SsdAnchorsCalculator anchors, TensorsToDetectionsCalculator
decoding, NonMaxSuppressionCalculator with the WEIGHTED algorithm (overlapping detections are blended, not just
dropped). Detections are float32 rows of 17 values: x0, y0, x1, y1, six keypoints (x, y) - right eye, left eye,
nose tip, mouth centre, right ear tragion, left ear tragion - and the score.

The networks themselves (aletheia.faces.blazeface, aletheia.faces.full_range) need torch; this module, and the
shipped ONNX files run by aletheia.faces.networks, do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "blazeface"
NUM_KEYPOINTS = 6

# Short range: 128x128 input, 896 anchors.
SHORT_RANGE_WEIGHTS = ASSETS / "blazeface_short_range.pth"
SHORT_RANGE_INPUT_SIZE = 128
SHORT_RANGE_NUM_ANCHORS = 896
# (stride, anchors per cell) of the output maps, in output order.
SHORT_RANGE_ANCHOR_LAYOUT = ((8, 2), (16, 6))

# Full range: 192x192 input, one anchor per cell of a stride-4 map.
FULL_RANGE_WEIGHTS = ASSETS / "blazeface_full_range.pth"
FULL_RANGE_INPUT_SIZE = 192
FULL_RANGE_STRIDE = 4
# Sizes must be multiples of this for the pyramid's upsampled maps to line up with the lateral ones.
FULL_RANGE_SIZE_MULTIPLE = 32


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
