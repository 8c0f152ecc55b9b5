"""Face tracks (one per person) across sampled frames, and one score per track.

Linking is greedy, frame after frame: a face joins the track whose last box overlaps it most (IoU >= `min_iou`);
faces left over join the nearest remaining track whose last face is at most `max_distance` face sizes away per
sampled frame since it was seen, and of similar size (faces move between sparse frames, so boxes may no longer
overlap). A track may miss up to `max_gap` sampled frames (a turned head, a hand in front) and still be continued.
A face matching no track starts a new one.

Tracks seen in fewer than `min_track_fraction` of the sampled frames, or than `min_track_frames`, are dropped as spurious
detections, unless no track is that long: then the longest track(s) are kept, so a video whose only face is brief
still gets a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

FrameFaces = tuple[int, int]  # (position among the sampled frames, face number in that frame)


@dataclass(frozen=True)
class TrackLinker:
    min_iou: float = 0.3
    # Between box centres, in face sizes (mean side of the two boxes), per sampled frame since the track was seen.
    max_distance: float = 2.0
    max_size_ratio: float = 1.6  # larger side over smaller side, for the distance fallback
    max_gap: int = 2  # sampled frames a track may miss and still be continued
    min_track_fraction: float = 0.1
    min_track_frames: int = 2

    def link(self, boxes: Sequence[np.ndarray]) -> list[list[FrameFaces]]:
        """Tracks over per-frame (k, 4) x0, y0, x1, y1 boxes; each a list of (frame, face), in order of appearance."""
        tracks: list[list[FrameFaces]] = []
        last_box: list[np.ndarray] = []
        for t, frame_boxes in enumerate(boxes):
            open_tracks = [i for i, track in enumerate(tracks) if t - track[-1][0] <= self.max_gap + 1]
            taken_tracks, taken_faces = set(), set()
            candidates = self._candidates(
                [(i, t - tracks[i][-1][0]) for i in open_tracks], last_box, frame_boxes
            )
            for _, i, j in sorted(candidates):
                if i not in taken_tracks and j not in taken_faces:
                    taken_tracks.add(i)
                    taken_faces.add(j)
                    tracks[i].append((t, j))
                    last_box[i] = frame_boxes[j]
            for j in range(len(frame_boxes)):
                if j not in taken_faces:
                    tracks.append([(t, j)])
                    last_box.append(frame_boxes[j])
        return self._keep_long(tracks, len(boxes))

    def _candidates(
        self, open_tracks: list[tuple[int, int]], last_box: list[np.ndarray], frame_boxes: np.ndarray
    ) -> list[tuple[tuple[int, float], int, int]]:
        """(priority, track, face) pairs that may be linked: all overlaps first (largest IoU first), then distances.
        `open_tracks` holds (track, sampled frames since it was last seen)."""
        pairs = []
        for i, elapsed in open_tracks:
            for j, box in enumerate(frame_boxes):
                overlap = iou(last_box[i], box)
                if overlap >= self.min_iou:
                    pairs.append(((0, -overlap), i, j))
                    continue
                side_a, side_b = _side(last_box[i]), _side(box)
                if max(side_a, side_b) > self.max_size_ratio * min(side_a, side_b):
                    continue
                distance = float(np.hypot(*(_centre(last_box[i]) - _centre(box)))) / ((side_a + side_b) / 2)
                if distance <= self.max_distance * elapsed:
                    pairs.append(((1, distance), i, j))
        return pairs

    def _keep_long(self, tracks: list[list[FrameFaces]], num_frames: int) -> list[list[FrameFaces]]:
        if not tracks:
            return []
        needed = max(self.min_track_frames, math.ceil(self.min_track_fraction * num_frames))
        longest = max(len(track) for track in tracks)
        return [track for track in tracks if len(track) >= min(needed, longest)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = float(width * height)
    return inter / (float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter)


def _side(box: np.ndarray) -> float:
    return max(1e-6, float(np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)


# -- scoring a track from its faces' logits --------------------------------------------------------------------


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def mean_logit(logits: np.ndarray) -> float:
    """Sigmoid of the mean logit (ISPL): every frame counts, confident frames a little more than a mean of
    probabilities would let them."""
    return float(_sigmoid(np.mean(logits)))


def max_score(logits: np.ndarray) -> float:
    """The most fake-looking frame: catches a manipulation shown only briefly, at the price of more false alarms."""
    return float(_sigmoid(np.max(logits)))


def confident(logits: np.ndarray, threshold: float = 0.8) -> float:
    """The DFDC winner's (Seferbekov) `confident_strategy`, on probabilities p.

    If more than 40% of the frames are confident fakes (p > 0.8) - and more than 11 of 32 - the mean of those; else,
    if over 90% are confident reals (p < 0.2), the mean of those; else the mean of all. Confident frames thus are
    not diluted by the frames where a manipulation is hidden (profile, blur). The original counts 11 frames out of
    32 sampled per video; here that count is scaled to the track's length (identical at 32).
    """
    p = _sigmoid(logits)
    size = len(p)
    fakes = int(np.count_nonzero(p > threshold))
    if fakes > size // 2.5 and fakes > 11 * size / 32:
        return float(np.mean(p[p > threshold]))
    if np.count_nonzero(p < 0.2) > 0.9 * size:
        return float(np.mean(p[p < 0.2]))
    return float(np.mean(p))


TRACK_STRATEGIES: dict[str, Callable[[np.ndarray], float]] = {
    "mean_logit": mean_logit,
    "confident": confident,
    "max": max_score,
}


def score_track(logits: Sequence[float] | np.ndarray, strategy: str = "mean_logit") -> float:
    """One fake probability for a track from the logits of its faces (see TRACK_STRATEGIES)."""
    if strategy not in TRACK_STRATEGIES:
        raise ValueError(f"unknown track strategy {strategy!r}; choose one of {tuple(TRACK_STRATEGIES)}")
    values = np.asarray(logits, dtype=np.float64)
    if values.size == 0:
        raise ValueError("a track needs at least one face")
    return TRACK_STRATEGIES[strategy](values)
