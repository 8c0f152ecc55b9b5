"""Typed results of the pipeline and their one JSON form, shared by the CLI, the web app and the REST API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Label = Literal["fake", "real", "no_face", "error"]


def verdict(error: str | None, score: float | None, threshold: float) -> Label:
    """The one labelling rule for images and videos: error, no face, or the best score against the threshold."""
    if error is not None:
        return "error"
    if score is None:
        return "no_face"
    return "fake" if score >= threshold else "real"


@dataclass
class FaceResult:
    """One face: where it is, how sure the detector was, and the fake probability the classifier gave it."""

    box: np.ndarray  # (4,) x0, y0, x1, y1 in original pixels
    keypoints: np.ndarray  # (6, 2)
    detection_score: float
    score: float  # probability that the face is fake
    crop: np.ndarray | None = field(default=None, repr=False)  # the classifier's input, RGB uint8
    attention: np.ndarray | None = field(default=None, repr=False)  # (h, w) in 0..1, where the network looked
    # Probability per kind of fake ("manipulated", "generated") for models that score kinds; empty otherwise.
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "box": [round(float(v), 1) for v in self.box],
            "detection_score": round(float(self.detection_score), 4),
            "score": round(float(self.score), 6),
        }
        if self.scores:
            out["scores"] = {kind: round(float(p), 6) for kind, p in self.scores.items()}
        out["keypoints"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.keypoints]
        return out


@dataclass
class ImageResult:
    """Everything known about one input image; `error` is set (and `faces` empty) when it could not be read."""

    path: str
    threshold: float
    model: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def score(self) -> float | None:
        """The highest face score: an image is fake if any face in it is."""
        return max((f.score for f in self.faces), default=None)

    @property
    def label(self) -> Label:
        return verdict(self.error, self.score, self.threshold)

    @property
    def scores(self) -> dict[str, float]:
        """Per kind of fake, the highest face probability (empty for one-output models or without faces)."""
        kinds = self.faces[0].scores if self.faces else {}
        return {kind: max(f.scores[kind] for f in self.faces) for kind in kinds}

    def to_json(self) -> dict[str, Any]:
        score = self.score
        out = {
            "path": self.path,
            "kind": "image",
            "score": None if score is None else round(float(score), 6),
        }
        if scores := self.scores:
            out["scores"] = {kind: round(float(p), 6) for kind, p in scores.items()}
        return out | {
            "label": self.label,
            "threshold": self.threshold,
            "model": self.model,
            "faces": [f.to_json() for f in self.faces],
            "error": self.error,
        }
