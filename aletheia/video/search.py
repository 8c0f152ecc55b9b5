"""Finding faces in a run of sampled frames without searching every frame whole.

Every `full_every`-th frame (and any frame while no face is known) gets the full search of `FaceDetector`: the
zoomed-out level, the short-range pyramid and the full-range levels over the whole frame. In the frames between,
each face known from the last full search is followed: it is looked for only in a square window `window` times its
size around where it was last seen, by the frame's own short-range levels (so it is seen at the scales, and framed
as, a full search would see it: boxes agree with a full search's at IoU 0.95-0.99 on a moving face), with a lower
score threshold since a face was just there, and the detection nearest to it is kept. The full-range model, which
adds faces only where the short-range one finds none, is left out, and so are levels where the face, even grown or
shrunk by _GROWTH, would be out of range. A follow costs a tenth of a full search (a 1080p frame: ~4 against ~40 ms
of CPU). A person entering the picture is found at the next full search, at most
`full_every - 1` sampled frames late.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from aletheia.faces.extract import MIN_FACE_PX, Face, FaceDetector, Level
from aletheia.faces.networks import SHORT_RANGE
from aletheia.video.tracks import iou

# Detections closer than this (fraction of the window) to a window edge inside the frame are cut faces: dropped.
_EDGE = 0.01
# A followed face is looked for as if it may have grown or shrunk by this factor since it was last seen (as
# TrackLinker.max_size_ratio): levels where it could not be in range are not run.
_GROWTH = 1.6


@dataclass
class FrameFaceSearch:
    detector: FaceDetector
    full_every: int = 4
    window: float = 4.0
    # A face just seen is looked for again with this lower detection score threshold (a track is a strong prior).
    follow_score_threshold: float = 0.5
    _known: list[Face] = field(default_factory=list, repr=False)  # each followed face where last seen
    _since_full: int = field(default=0, repr=False)
    _follower: FaceDetector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.full_every < 1 or self.window < 2:
            raise ValueError(f"need full_every >= 1 and window >= 2, got {self.full_every} and {self.window}")
        self._follower = dataclasses.replace(self.detector, score_threshold=self.follow_score_threshold)

    def reset(self) -> None:
        """Forget the faces seen so far (call between videos)."""
        self._known, self._since_full = [], 0

    def __call__(self, image: np.ndarray) -> list[Face]:
        """The faces of the next sampled frame, best first."""
        if not self._known or self._since_full % self.full_every == 0:
            faces = self.detector.detect(image)
            self._known, self._since_full = list(faces), 1
            return faces
        self._since_full += 1
        found = [self._follow(image, face) for face in self._known]
        self._known = [new or old for new, old in zip(found, self._known, strict=True)]
        # Two followed faces may lead to the same face: keep the surer detection.
        return _distinct(sorted((f for f in found if f is not None), key=lambda f: -f.detection_score))

    def _follow(self, image: np.ndarray, face: Face) -> Face | None:
        """The detection nearest to `face` in a window around it, in frame pixels; None if there is none."""
        height, width = image.shape[:2]
        size = max(face.width, face.height)
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        x0, y0 = max(0, round(cx - self.window * size / 2)), max(0, round(cy - self.window * size / 2))
        x1, y1 = (
            min(width, round(cx + self.window * size / 2)),
            min(height, round(cy + self.window * size / 2)),
        )
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        # The frame's own short-range levels: a face is seen at the scales, and so framed as, a full search sees it.
        levels = [
            level
            for level in self.detector.levels(height, width)
            if level.spec is SHORT_RANGE and _may_find(level, size)
        ]
        near = [
            f
            for f in self._follower.detect(image[y0:y1, x0:x1], levels)
            if not _cut(f.box, (x0, y0, x1, y1), width, height)
        ]
        if not near:
            return None
        offset = np.array([x0, y0], dtype=np.float32)
        best = min(near, key=lambda f: float(np.hypot(*((f.box[:2] + f.box[2:]) / 2 + offset - (cx, cy)))))
        return Face(best.box + np.tile(offset, 2), best.keypoints + offset, best.detection_score)


def _may_find(level: Level, size: float) -> bool:
    """Whether a level may find a face `size` pixels wide when last seen, grown or shrunk by up to _GROWTH."""
    return size * _GROWTH * level.scale >= MIN_FACE_PX and size / _GROWTH * level.scale < level.max_face


def _cut(box: np.ndarray, window: tuple[int, int, int, int], width: int, height: int) -> bool:
    """Whether a box (window pixels) touches a window edge that lies inside the frame: a face cut by the window."""
    x0, y0, x1, y1 = window
    margin_x, margin_y = _EDGE * (x1 - x0), _EDGE * (y1 - y0)
    return bool(
        (x0 > 0 and box[0] <= margin_x)
        or (y0 > 0 and box[1] <= margin_y)
        or (x1 < width and box[2] >= x1 - x0 - margin_x)
        or (y1 < height and box[3] >= y1 - y0 - margin_y)
    )


def _distinct(faces: list[Face], max_iou: float = 0.5) -> list[Face]:
    """Faces in order, leaving out any that overlaps one before it by more than `max_iou`."""
    kept: list[Face] = []
    for face in faces:
        if all(iou(face.box, other.box) <= max_iou for other in kept):
            kept.append(face)
    return kept
