"""Find faces in images of any size and cut them out the same way for inference and training.

BlazeFace's body is convolutional, so the face search runs it once per scale over the whole downscaled image, its
anchors laid on the larger grid (aletheia.faces.networks), instead of on overlapping 128 px tiles:

* short range (finds faces of 16-96 px at its scale) on a pyramid of whole-image levels a factor 3 apart, from
  the scale that makes the smallest wanted face 16 px down to the image's longer side at 128 px. Each level but
  the coarsest keeps only faces under 72 px: larger ones belong to a coarser level, where they are whole and in
  range (close-ups otherwise yield parts of a face as faces);
* the zoomed-out level: the whole image in 1/1.6 of a 128 px input, for close-ups and pre-cropped faces larger
  than the short-range model's biggest anchors;
* full range (192 px, finds faces of 12-128 px) at the longer side 192 and 384 with a black border of 1/8 all
  round: it scores faces cut by the frame edge and blurred or turned faces the short-range model misses. Its faces
  are added only where the short-range model found none, so found faces keep the short-range framing. It also
  checks the short-range model: a short-range face of a low score that it could see but did not find is dropped.

Detections are merged with MediaPipe's weighted NMS; a box lying mostly inside a face twice its size is dropped.
Level inputs are made from one another by whole-factor area averaging (`_Downscaler`), and where the process has
two CPU threads the levels run on both (`_share_work`, same results as one thread). Against resizing each level
from the full image, the development photos' boxes moved by a median 0.4% (at most 1.7%) of the face width.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from aletheia.faces.detections import iou, weighted_nms
from aletheia.faces.networks import FULL_RANGE, SHORT_RANGE, BlazeFaceNetwork, NetworkSpec, shared_network

FacePolicy = Literal["scale", "tight"]
FACE_POLICIES: tuple[str, ...] = ("scale", "tight")
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)

# Smallest face (box width, input pixels) the short-range model finds reliably; the finest level makes the
# smallest wanted face this large (measured on faces pasted at every size: all found from 16 px, none at 14).
MIN_FACE_PX = 16.0
# Faces at least this large (level pixels) are left to the next coarser level (the model is sure up to ~96).
_MAX_FACE_PX = 72.0
# Scale between pyramid levels: a 72 px face at one level is 24 px at the next, well inside the model's range.
_LEVEL_RATIO = 3.0
# The zoomed-out level: the image fills 1/_ZOOM_OUT of the input side.
_ZOOM_OUT = 1.6
# Never magnify more than this (tinier faces hold too little detail).
_MAX_UPSCALE = 4.0
# Photos are searched down to faces of this fraction of the longer side (but see adaptive_min_face).
PHOTO_MIN_FACE_FRACTION = 0.02
# Full-range levels (longer side, input pixels) and their black border (fraction of the side, each way).
_FULL_RANGE_SIDES = (192, 384)
_FULL_RANGE_BORDER = 0.125
# Face widths (input pixels) the full-range model finds.
_FULL_RANGE_FACE_PX = (12.0, 128.0)
# A short-range face scoring under this must also be found by the full-range model wherever that model sees faces
# of its size. Measured: the development photos' real faces that scored under it (0.81, 0.84) were (at 0.81 and
# more); the collar under the astronaut's chin in the mirrored photo (0.76-0.79 at one pyramid level) was not.
_CONFIRM_BELOW = 0.85
# Levels searched at once. The finest level takes about as long as all the others together (a 1080p photo: 26 of
# 50 ms on one core), so two threads share the work evenly; more would wait on it. Each thread's network runs get an
# even share of the search's threads.
_LEVEL_THREADS = 2
# The full-range model's time per input pixel relative to the short-range model's (measured: 0.095 vs 0.077 us).
_FULL_RANGE_COST = 1.3


@dataclass
class Face:
    """One detected face in original image pixels."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) x, y
    detection_score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True)
class Level:
    """One pass of a network over the whole image, resized by `scale` and framed with a black `border`."""

    spec: NetworkSpec
    scale: float  # level pixels per original pixel
    border: int = 0  # black pixels added on every side
    canvas: int | None = None  # a fixed square input with the image at its top-left (the zoomed-out level)
    max_face: float = float("inf")  # faces this wide (level pixels) or wider are left to a coarser level

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the network input: the resized image plus borders, up to a multiple of the model's."""
        if self.canvas:
            return self.canvas, self.canvas
        multiple = self.spec.size_multiple
        h, w = _resized(height, width, self.scale)
        return tuple(-(-(side + 2 * self.border) // multiple) * multiple for side in (h, w))  # type: ignore[return-value]


@dataclass
class FaceDetector:
    """BlazeFace over whole-image levels. `min_face_size` (original pixels) sets the finest level.

    With `min_face_size=None` it is chosen per image as 2% of the longer side but at least 40 px (6% of it in
    images under 500 px): faces of 80 px are found in a 4000x3000 photo without searching a phone snapshot at full
    resolution, and thumbnails are searched down to faces of a few pixels. `min_face_fraction` instead sets it per
    image as that share of the longer side, for datasets of pre-cropped faces (0.25: a 200 px face crop is searched
    at 128 px only, and its face is cut exactly as the adaptive search cuts it); faces in whole photos and video
    frames are smaller than that, so leave it unset for them.
    """

    min_face_size: float | None = None
    min_face_fraction: float | None = None
    score_threshold: float = 0.75  # short range
    full_range_threshold: float = 0.45  # full range: its scores run lower for the same faces
    nms_iou: float = 0.3
    device: str = "cpu"
    backend: str = "auto"  # BlazeFace runtime: ONNX Runtime on a CPU, torch on a GPU
    threads: int | None = None  # CPU threads one search uses (None: the process's count, aletheia.onnxrt)
    _short: BlazeFaceNetwork = field(init=False, repr=False)
    _full: BlazeFaceNetwork = field(init=False, repr=False)
    _workers: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.min_face_fraction is not None and not 0 < self.min_face_fraction <= 1:
            raise ValueError(f"min_face_fraction must be in (0, 1], got {self.min_face_fraction}")
        self._workers, per_run = 1, None
        if str(self.device).split(":")[0] == "cpu" and self.backend in ("auto", "onnx"):
            from aletheia.onnxrt import thread_count

            total = self.threads or thread_count()
            self._workers = min(_LEVEL_THREADS, total)
            per_run = max(1, total // self._workers)
        self._short = shared_network(SHORT_RANGE, str(self.device), self.backend, per_run)
        self._full = shared_network(FULL_RANGE, str(self.device), self.backend, per_run)

    def _min_face(self, height: int, width: int) -> float:
        if self.min_face_size is not None:
            return float(self.min_face_size)
        longest = max(height, width)
        if self.min_face_fraction is not None:
            return self.min_face_fraction * longest
        return adaptive_min_face(longest, PHOTO_MIN_FACE_FRACTION)

    def levels(self, height: int, width: int) -> list[Level]:
        """The passes made over an image of this size: zoomed out, the short-range pyramid, full range."""
        size = SHORT_RANGE.input_size
        longest = max(height, width)
        levels = [Level(SHORT_RANGE, size / (longest * _ZOOM_OUT), canvas=size)]
        finest = longest * min(MIN_FACE_PX / self._min_face(height, width), _MAX_UPSCALE)
        sides = [max(finest, size)]
        while sides[-1] / _LEVEL_RATIO > size:
            sides.append(sides[-1] / _LEVEL_RATIO)
        if sides[-1] > size:
            sides.append(size)
        levels += [
            Level(SHORT_RANGE, side / longest, max_face=_MAX_FACE_PX if side > size else float("inf"))
            for side in sides
        ]
        levels += [
            Level(FULL_RANGE, side / longest, border=round(side * _FULL_RANGE_BORDER))
            for side in _FULL_RANGE_SIDES
            # Searches for large faces only (pre-cropped faces) stop at the first.
            if side == _FULL_RANGE_SIDES[0] or side <= 1.5 * sides[0]
        ]
        return levels

    def detect(self, image: np.ndarray, levels: list[Level] | None = None) -> list[Face]:
        """All faces in an RGB uint8 image, in original pixels, best first. `levels`: the passes to make, if not
        this image's own (a video's face follower makes a frame's short-range passes over a window of it)."""
        height, width = image.shape[:2]
        found: dict[str, list[np.ndarray]] = {SHORT_RANGE.name: [], FULL_RANGE.name: []}
        levels = self.levels(height, width) if levels is None else levels
        per_level = self._search_levels(levels, _level_inputs(image, levels))
        for level, detections in zip(levels, per_level, strict=True):
            found[level.spec.name].append(detections)
        short = _merge(found[SHORT_RANGE.name], self.nms_iou)
        full = _merge(found[FULL_RANGE.name], self.nms_iou)
        full_scales = [level.scale for level in levels if level.spec is FULL_RANGE]
        short = short[_sure_or_confirmed(short, full, full_scales, self.nms_iou)]
        # Full-range faces only where the short-range model saw none: found faces keep today's framing.
        full = full[[not len(short) or iou(row, short).max() <= self.nms_iou for row in full]]
        merged = _drop_faces_inside_faces(np.concatenate([short, full]))
        merged = merged[np.argsort(-merged[:, 16], kind="stable")]
        return [
            Face(box=row[:4].copy(), keypoints=row[4:16].reshape(6, 2).copy(), detection_score=float(row[16]))
            for row in merged
        ]

    def _search(self, level: Level, level_input: np.ndarray) -> np.ndarray:
        """One level's detections, in original pixels."""
        short = level.spec is SHORT_RANGE
        network = self._short if short else self._full
        threshold = self.score_threshold if short else self.full_range_threshold
        (detections,) = network.detect(level_input[None], threshold, self.nms_iou)
        detections = detections[detections[:, 2] - detections[:, 0] < level.max_face]
        return _to_original_pixels(detections, level)

    def _search_levels(self, levels: list[Level], inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Each level's detections, in the order of `levels`; with two threads, on both (`_share_work`)."""
        order = sorted(range(len(levels)), key=lambda i: -_cost(levels[i], inputs[i]))
        found = _share_work(lambda i: self._search(levels[i], inputs[i]), order, self._workers)
        return [found[i] for i in range(len(levels))]


def _share_work(fn: Callable[[int], np.ndarray], items: list[int], workers: int) -> dict[int, np.ndarray]:
    """`fn(item)` for every item (costliest first), by this thread and `workers - 1` threads of a shared pool.

    This thread takes items from the costly end, pool threads from the cheap end, each the next one when free, and
    this thread waits only for items a pool thread took. On free cores the work is shared; on a busy CPU, where a
    pool thread may not get a core for a while, this thread does the rest itself, and a late pool thread holds up
    only a cheap item. (A fixed split of the levels was 1.4x slower than one thread on a loaded CPU.)
    """
    if workers < 2 or len(items) < 2:
        return {item: fn(item) for item in items}
    remaining = deque(items)
    lock = threading.Lock()
    found: dict[int, np.ndarray] = {}
    taken: list[threading.Event] = []  # one per item a pool thread took, set when it is done
    failures: list[BaseException] = []

    def work(helper: bool) -> None:
        while True:
            with lock:
                if not remaining:
                    return
                item = remaining.pop() if helper else remaining.popleft()
                done = threading.Event()
                if helper:
                    taken.append(done)
            try:
                found[item] = fn(item)
            except BaseException as exc:  # raised in the calling thread below
                if not helper:
                    raise
                failures.append(exc)
            finally:
                done.set()

    pool = _level_pool(workers - 1)
    for _ in range(workers - 1):
        pool.submit(work, True)
    work(False)
    with lock:  # no item is left to take: `taken` is complete
        events = list(taken)
    for event in events:
        event.wait()
    if failures:
        raise failures[0]
    return found


def _cost(level: Level, level_input: np.ndarray) -> float:
    """A level's relative search time: input pixels, times the full-range model's higher cost per pixel."""
    per_pixel = _FULL_RANGE_COST if level.spec is FULL_RANGE else 1.0
    return level_input.shape[0] * level_input.shape[1] * per_pixel


@lru_cache(maxsize=2)
def _level_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aletheia-levels")


if hasattr(os, "register_at_fork"):  # a forked child has none of its parent's threads: it makes its own pool
    os.register_at_fork(after_in_child=_level_pool.cache_clear)


def adaptive_min_face(longest: int, fraction: float) -> float:
    """The smallest face searched for in a picture whose longer side is `longest`: `fraction` of it, but at least
    40 px (6% of it in pictures under ~670 px). Not rounded: the pyramid's levels follow it, and photos and video
    frames of one size must be searched at the same levels to find a face in the same box."""
    return max(fraction * longest, min(40.0, 0.06 * longest))


def _resized(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height * scale)), max(1, round(width * scale))


def _level_inputs(image: np.ndarray, levels: list[Level]) -> list[np.ndarray]:
    """Each level's input: the image resized by the level's scale, at (border, border) on a black input of the
    level's shape. Downscaled images are made from one another, largest first (`_Downscaler`)."""
    height, width = image.shape[:2]
    downscaler = _Downscaler(image)
    inputs: dict[int, np.ndarray] = {}
    for i in sorted(range(len(levels)), key=lambda i: -levels[i].scale):
        level = levels[i]
        h, w = _resized(height, width, level.scale)
        if level.scale < 1:
            resized = downscaler.resized(w, h)
        else:
            resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
        inputs[i] = np.zeros((*level.input_shape(height, width), 3), np.uint8)
        inputs[i][level.border : level.border + h, level.border : level.border + w] = resized
    return [inputs[i] for i in range(len(levels))]


class _Downscaler:
    """Downscaled copies of one image, each made from the smallest copy made so far that is at least as large.

    OpenCV's area averaging is fast only for whole factors (1920 -> 960: 1 ms) and slow otherwise (1920 -> 768:
    13 ms, 1920 -> 256: 11 ms, on a loaded 2-core EPYC). So a copy is first averaged down by the largest whole factor
    that keeps it at least as large as wanted (dropping at most factor - 1 pixels at the right and bottom), then
    interpolated linearly by the remaining factor, under 2 (960 -> 768). The pyramid's levels mostly lie whole
    factors apart (768, 384, 256, 192, 128 for a 1920 px photo), so most need the first step only.
    """

    def __init__(self, image: np.ndarray) -> None:
        self.copies = [image]

    def resized(self, width: int, height: int) -> np.ndarray:
        source = min(
            (c for c in self.copies if c.shape[1] >= width and c.shape[0] >= height), key=lambda c: c.shape[1]
        )
        factor = min(source.shape[1] // width, source.shape[0] // height)
        if factor > 1:
            h, w = source.shape[0] // factor, source.shape[1] // factor
            source = cv2.resize(source[: h * factor, : w * factor], (w, h), interpolation=cv2.INTER_AREA)
            self.copies.append(source)
        if source.shape[:2] != (height, width):
            source = cv2.resize(source, (width, height), interpolation=cv2.INTER_LINEAR)
            self.copies.append(source)
        return source


def _to_original_pixels(detections: np.ndarray, level: Level) -> np.ndarray:
    out = detections.copy()
    out[:, :16] = (out[:, :16] - level.border) / level.scale
    return out


def _merge(parts: list[np.ndarray], nms_iou: float) -> np.ndarray:
    detections = np.concatenate(parts) if parts else np.zeros((0, 17), np.float32)
    return weighted_nms(detections, nms_iou)


def _sure_or_confirmed(
    short: np.ndarray, full: np.ndarray, full_scales: list[float], nms_iou: float
) -> np.ndarray:
    """Which short-range faces to keep: those scoring at least _CONFIRM_BELOW, those the full-range model also
    found, and those too small or too large for it at every full-range level (it could not judge them)."""
    width = short[:, 2] - short[:, 0]
    low, high = _FULL_RANGE_FACE_PX
    judged = np.zeros(len(short), dtype=bool)
    for scale in full_scales:
        judged |= (width * scale >= low) & (width * scale <= high)
    found = np.array([len(full) > 0 and iou(row, full).max() > nms_iou for row in short], dtype=bool)
    return (short[:, 16] >= _CONFIRM_BELOW) | found | ~judged


def _drop_faces_inside_faces(detections: np.ndarray) -> np.ndarray:
    """Drop a box lying mostly (over half its area) inside a box twice as large: a part of a face seen as a face."""
    if len(detections) < 2:
        return detections
    x0, y0, x1, y1 = (detections[:, i] for i in range(4))
    area = (x1 - x0) * (y1 - y0)
    keep = np.ones(len(detections), dtype=bool)
    for i in range(len(detections)):
        w = np.clip(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), 0, None)
        h = np.clip(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), 0, None)
        keep[i] = not np.any((area > 2 * area[i]) & (w * h > 0.5 * area[i]))
    return detections[keep]


def margin_box(box: np.ndarray, margin: float = 0.2) -> np.ndarray:
    """Grow a face box by `margin` of its size on each side and twice that above, for the forehead (as ISPL)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return np.array([x0 - dx, y0 - 2 * dy, x1 + dx, y1 + dy], dtype=np.float32)


def crop_region(
    height: int, width: int, box: np.ndarray, policy: FacePolicy = "scale", margin: float = 0.2
) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) pixels of the image that `crop_face` cuts out for this face box."""
    if policy not in FACE_POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; choose one of {FACE_POLICIES}")
    x0, y0, x1, y1 = margin_box(box, margin)
    if policy == "scale":
        side = max(1, round(min(max(x1 - x0, y1 - y0), width, height)))
        left = int(np.clip(round((x0 + x1 - side) / 2), 0, width - side))
        top = int(np.clip(round((y0 + y1 - side) / 2), 0, height - side))
        return left, top, left + side, top + side
    left, top = int(np.clip(round(x0), 0, width - 1)), int(np.clip(round(y0), 0, height - 1))
    return left, top, int(np.clip(round(x1), left + 1, width)), int(np.clip(round(y1), top + 1, height))


def face_fraction(height: int, width: int, box: np.ndarray, margin: float = 0.2) -> float:
    """How much of a `scale` crop's width the face box spans: 0.63 in a whole photo at margin 0.2, more where the
    margin ran off a pre-cropped picture (UTKFace and FF++ face crops: about 0.9)."""
    left, _, right, _ = crop_region(height, width, box, "scale", margin)
    return float((box[2] - box[0]) / (right - left))


def unclipped_face_fraction(box: np.ndarray, margin: float = 0.2) -> float:
    """`face_fraction` for a face with room all round it, as in a whole photo: nothing clips its `scale` crop."""
    x0, y0, x1, y1 = margin_box(box, margin)
    return float((box[2] - box[0]) / max(x1 - x0, y1 - y0))


def box_in_crop(
    height: int,
    width: int,
    box: np.ndarray,
    policy: FacePolicy = "scale",
    size: int = 224,
    margin: float = 0.2,
) -> np.ndarray:
    """Where the face box lies inside the crop `crop_face` makes (crop pixels), e.g. to place a blending mask."""
    left, top, right, bottom = crop_region(height, width, box, policy, margin)
    factor = size / max(right - left, bottom - top)
    pad_x = (size - round((right - left) * factor)) // 2
    pad_y = (size - round((bottom - top) * factor)) // 2
    x0, y0, x1, y1 = (np.asarray(box, dtype=np.float64) - [left, top, left, top]) * factor + [
        pad_x,
        pad_y,
        pad_x,
        pad_y,
    ]
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def crop_face(
    image: np.ndarray,
    box: np.ndarray,
    policy: FacePolicy = "scale",
    size: int = 224,
    margin: float = 0.2,
) -> np.ndarray:
    """Cut one face out as a size x size RGB crop. The one crop function for inference and training.

    `scale`: the square of side max(w, h) around the margin box, resized to size (ISPL's training crop).
    `tight`: the margin box itself, longest side resized to size, centred on a black square.
    Crops never reach outside the image (ISPL clips too): a `scale` square is shifted inside, and shrunk to the
    image's shorter side if it is larger. Black padding would mark pre-cropped face datasets (whose margins run off
    the picture) apart from faces found in whole photos, a difference a model could learn instead of the face.
    """
    left, top, right, bottom = crop_region(image.shape[0], image.shape[1], box, policy, margin)
    region = image[top:bottom, left:right]
    h, w = region.shape[:2]
    factor = size / max(h, w)
    new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(region, (new_w, new_h), interpolation=interpolation)
    if (new_h, new_w) == (size, size):
        return resized
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas
