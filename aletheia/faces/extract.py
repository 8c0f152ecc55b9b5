"""Find faces in images of any size and cut them out the same way for inference and training.

BlazeFace (short range) sees a 128x128 input and finds faces from about a sixth of that input up to nearly all of it.
To find small faces in large photos we run it on a pyramid of square tiles: the whole image, then tiles half as
large with 50% overlap, and so on down to the tile size at which the smallest wanted face is still big enough.
The 50% overlap means every face no larger than half a tile lies wholly inside some tile, so detections that touch
an inner tile border (cut faces) can be dropped; the rest are mapped back to original pixels and merged with
weighted NMS across tiles and levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from aletheia.faces.blazeface import BlazeFaceDetector, weighted_nms

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

# Smallest face, as a fraction of BlazeFace's 128 px input, that it finds reliably (measured: see benchmarks/).
_MIN_FACE_FRACTION = 0.18
# A detection closer than this (fraction of the tile) to an inner tile border is taken as a cut face.
_BORDER_FRACTION = 0.01
# The zoomed-out first level: the image fills 1/_ZOOM_OUT of the input side.
_ZOOM_OUT = 1.6
# Tiles are never smaller than this many original pixels (at most 4x upscaling: tinier faces hold too little detail).
_MIN_TILE_SIDE = 32


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
class _Tile:
    level_scale: float  # pyramid image pixels per original pixel
    x: int  # top-left corner in pyramid image pixels
    y: int
    touches_left: bool
    touches_top: bool
    touches_right: bool
    touches_bottom: bool


@dataclass
class FaceDetector:
    """BlazeFace over a tile pyramid. `min_face_size` (original pixels) sets how deep the pyramid goes.

    With `min_face_size=None` it is chosen per image as 2% of the longer side but at least 40 px (6% of it in
    images under 500 px): faces of 80 px are found in a 4000x3000 photo without tiling a phone snapshot into
    hundreds of pieces, and thumbnails are searched down to faces of a few pixels. `min_face_fraction` instead sets
    it per image as that share of the longer side, for datasets of pre-cropped faces: a 200-px face crop is
    otherwise searched with 89 tiles for faces down to 36 px. On the development data 0.25 prepared 13x faster and
    cut 14,320 of its 14,327 training faces byte for byte as the adaptive search did (it skips small second faces);
    faces in whole photos and video frames are smaller than that, so leave it unset for them.
    """

    min_face_size: int | None = None
    min_face_fraction: float | None = None
    score_threshold: float = 0.75
    nms_iou: float = 0.3
    device: str = "cpu"
    batch_size: int = 64
    backend: str = "auto"  # BlazeFace runtime: ONNX Runtime on a CPU (2-6x faster than torch), torch on a GPU
    _blazeface: BlazeFaceDetector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.min_face_fraction is not None and not 0 < self.min_face_fraction <= 1:
            raise ValueError(f"min_face_fraction must be in (0, 1], got {self.min_face_fraction}")
        self._blazeface = BlazeFaceDetector(
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            device=self.device,
            backend=self.backend,
        )

    def _min_face(self, height: int, width: int) -> float:
        if self.min_face_size is not None:
            return float(self.min_face_size)
        longest = max(height, width)
        if self.min_face_fraction is not None:
            return self.min_face_fraction * longest
        return max(0.02 * longest, min(40.0, 0.06 * longest))

    def _tiles(self, height: int, width: int) -> list[tuple[float, list[_Tile]]]:
        """Pyramid levels (scale, tiles), from the whole image down to the smallest useful tile."""
        size = BlazeFaceDetector.INPUT_SIZE
        longest = max(height, width)
        smallest_tile = self._min_face(height, width) / _MIN_FACE_FRACTION
        levels = []
        # The first level shows the whole image shrunk into part of the input: faces that fill a close-up or a
        # pre-cropped face image are larger than BlazeFace's biggest anchors and are missed at full size.
        levels.append(
            (
                size / (longest * _ZOOM_OUT),
                [_Tile(size / (longest * _ZOOM_OUT), 0, 0, True, True, True, True)],
            )
        )
        tile_side = float(longest)  # tile side in original pixels
        while True:
            scale = size / tile_side
            level_h, level_w = max(1, round(height * scale)), max(1, round(width * scale))
            # Upscaled levels only happen in small images, where tiles are cheap: overlap them more, because
            # BlazeFace's scores for tiny faces depend on where they fall on its anchor grid.
            stride = size // 4 if scale > 1 else size // 2
            tiles = [
                _Tile(scale, x, y, x == 0, y == 0, x + size >= level_w, y + size >= level_h)
                for y in _positions(level_h, size, stride)
                for x in _positions(level_w, size, stride)
            ]
            levels.append((scale, tiles))
            # Halve the tile while the image is being shrunk; once it would be enlarged, step more finely, since
            # upscaled tiny faces are found only at some magnifications.
            tile_side /= 2 if tile_side >= 2 * size else 1.25
            # Stop when the next level would only look for faces smaller than wanted, or would upscale the image.
            if tile_side < smallest_tile or tile_side < _MIN_TILE_SIDE:
                break
        return levels

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, in original pixels, best first."""
        height, width = image.shape[:2]
        size = BlazeFaceDetector.INPUT_SIZE
        crops, tiles = [], []
        for scale, level_tiles in self._tiles(height, width):
            level_w, level_h = max(1, round(width * scale)), max(1, round(height * scale))
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            level = cv2.resize(image, (level_w, level_h), interpolation=interpolation)
            # Pad to at least one tile; black padding is what MediaPipe's letterboxing adds too.
            level = cv2.copyMakeBorder(
                level, 0, max(0, size - level_h), 0, max(0, size - level_w), cv2.BORDER_CONSTANT, value=0
            )
            for tile in level_tiles:
                crops.append(level[tile.y : tile.y + size, tile.x : tile.x + size])
                tiles.append(tile)
        detections = []
        for start in range(0, len(crops), self.batch_size):
            batch = np.stack(crops[start : start + self.batch_size])
            for tile, found in zip(
                tiles[start : start + self.batch_size], self._blazeface.detect(batch), strict=True
            ):
                kept = _drop_cut_faces(found, tile)
                if len(kept):
                    detections.append(_to_original_pixels(kept, tile, size))
        if not detections:
            return []
        merged = weighted_nms(np.concatenate(detections), self.nms_iou)
        return [
            Face(box=row[:4].copy(), keypoints=row[4:16].reshape(6, 2).copy(), detection_score=float(row[16]))
            for row in merged
        ]


def _positions(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis, `stride` apart, the last one flush with the end."""
    if length <= size:
        return [0]
    positions = list(range(0, length - size, stride))
    positions.append(length - size)
    return positions


def _drop_cut_faces(detections: np.ndarray, tile: _Tile) -> np.ndarray:
    """Remove detections that touch a tile border lying inside the image: another tile holds that face whole."""
    if not len(detections):
        return detections
    edge = _BORDER_FRACTION
    x0, y0, x1, y1 = detections[:, 0], detections[:, 1], detections[:, 2], detections[:, 3]
    cut = np.zeros(len(detections), dtype=bool)
    if not tile.touches_left:
        cut |= x0 <= edge
    if not tile.touches_top:
        cut |= y0 <= edge
    if not tile.touches_right:
        cut |= x1 >= 1 - edge
    if not tile.touches_bottom:
        cut |= y1 >= 1 - edge
    return detections[~cut]


def _to_original_pixels(detections: np.ndarray, tile: _Tile, size: int) -> np.ndarray:
    out = detections.copy()
    coords = out[:, :16]
    coords[:, 0::2] = (coords[:, 0::2] * size + tile.x) / tile.level_scale
    coords[:, 1::2] = (coords[:, 1::2] * size + tile.y) / tile.level_scale
    return out


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


def matching_margin(boxes: np.ndarray, sizes: np.ndarray, margin: float = 0.2) -> float:
    """The margin at which faces in whole photos are framed as these crops (made at `margin`) frame theirs.

    Models trained on pre-cropped face datasets have seen tighter crops than a whole photo gives at the same
    margin; cropping inference faces tighter to match removes a difference the model never learned to ignore.
    `boxes` (n, 4) are the training faces' boxes (x0, y0, x1, y1), `sizes` (n, 2) their pictures' (height, width).
    """
    boxes, sizes = np.asarray(boxes, dtype=np.float64), np.asarray(sizes, dtype=int)
    target = np.median([face_fraction(h, w, b, margin) for (h, w), b in zip(sizes, boxes, strict=True)])

    def in_a_photo(m: float) -> float:
        return float(np.median([unclipped_face_fraction(b, m) for b in boxes]))

    candidates = np.round(np.arange(0.0, margin + 1e-9, 0.01), 2)
    return float(min(candidates, key=lambda m: abs(in_a_photo(m) - target)))


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
