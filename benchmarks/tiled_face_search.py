"""The tile-pyramid face search that the whole-image search replaced, kept only to compare against it
(benchmarks/detector_speed.py, and the seed-style baseline of benchmarks/pipeline_speed.py): BlazeFace short range
on 128 px tiles with 50% overlap plus a zoomed-out level, detections touching an inner tile border dropped as cut
faces."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from aletheia.faces.blazeface import weighted_nms
from aletheia.faces.extract import Face
from aletheia.faces.networks import BlazeFaceDetector

_MIN_FACE_FRACTION = 0.18
_BORDER_FRACTION = 0.01
_ZOOM_OUT = 1.6
_MIN_TILE_SIDE = 32


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
class TiledFaceDetector:
    """The former `FaceDetector`, with its default minimum face size. `backend`: BlazeFace's runtime ("auto": ONNX
    Runtime on the CPU; "torch": eager PyTorch, as the seed ran it)."""

    def __init__(self, batch_size: int = 64, backend: str = "auto") -> None:
        self.batch_size = batch_size
        self.nms_iou = 0.3
        self._blazeface = BlazeFaceDetector(backend=backend)

    def tile_count(self, height: int, width: int) -> int:
        """BlazeFace inputs (128 px tiles, all levels) one image of this size costs."""
        return sum(len(tiles) for _, tiles in self._tiles(height, width))

    def _min_face(self, height: int, width: int) -> float:
        longest = max(height, width)
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
