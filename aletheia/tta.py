"""Test-time augmentation: each face crop is scored as several views, whose logits are averaged.

A score that changes when the face is mirrored is not one to act on: averaging the views in logit space steadies it,
and the spread of the views' probabilities says how far it moved. The views of all faces go through the classifier
in one batch with the originals. Measured in benchmarks/stability.py (297 faces, bundled model, a loaded 2-core CPU):
`mirror` costs 1.5x the classifier time per face of `none`, `mirror_zoom` (mirror plus a 92% centre zoom of both)
5.3x; mirroring makes a mirrored photo score the same and cuts the median score change on a JPEG-75 re-save by a
fifth, and the zoom adds little to that.

Videos score each face once (VIDEO_TTA) unless a mode is asked for: a person's score already averages the logits
of up to 32 sampled frames, and the frames' agreement is checked (a person whose frames disagree is inconclusive).
On the 13 development videos (bundled model, the same faces both ways) mirroring changed a person's score by 0.004
(median) and 0.07 at most (a real video, 0.58 -> 0.51, inconclusive both ways), no verdict, and the video AUC not at
all (1.000 both), for twice the classifier time, the largest single cost of a video.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

ZOOM = 0.92  # the zoom view keeps this central share of the crop's side


def _original(crops: np.ndarray) -> np.ndarray:
    return crops


def _mirror(crops: np.ndarray) -> np.ndarray:
    return crops[:, :, ::-1]


def _zoom(crops: np.ndarray) -> np.ndarray:
    size = crops.shape[1]
    cut = round(size * (1 - ZOOM) / 2)
    return np.stack(
        [cv2.resize(c[cut : size - cut, cut : size - cut], (size, size), interpolation=cv2.INTER_LINEAR) for c in crops]
    ) if len(crops) else crops  # fmt: skip


def _zoom_mirror(crops: np.ndarray) -> np.ndarray:
    return _mirror(_zoom(crops))


View = Callable[[np.ndarray], np.ndarray]
# The first view of every mode is the crop itself (its attention map is the one shown).
TTA_MODES: dict[str, tuple[View, ...]] = {
    "none": (_original,),
    "mirror": (_original, _mirror),
    "mirror_zoom": (_original, _mirror, _zoom, _zoom_mirror),
}
DEFAULT_TTA = "mirror"
VIDEO_TTA = "none"


def check_mode(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; choose one of: {', '.join(TTA_MODES)}")
    return mode


def expand(crops: np.ndarray, mode: str) -> np.ndarray:
    """(n * views, size, size, 3): each crop followed by its views."""
    views = TTA_MODES[mode]
    if len(views) == 1:
        return crops
    return np.ascontiguousarray(
        np.stack([view(crops) for view in views], axis=1).reshape(-1, *crops.shape[1:])
    )


def views_of(mode: str) -> int:
    return len(TTA_MODES[mode])
