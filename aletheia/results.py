"""Typed results of the pipeline and their one JSON form, shared by the CLI, the web app, the REST API and reports.

Verdicts have three values for a scored face or input: `fake`, `real`, and `inconclusive` for a score inside the
model's band around the threshold, or one that moved too much under test-time augmentation (its `spread`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aletheia.caveats import Caveat, caveats_json
from aletheia.provenance import Provenance

Label = Literal["fake", "real", "inconclusive", "no_face", "error"]

# What each verdict means and what it does not, in one plain sentence each; shown wherever a verdict is.
EXPLANATIONS: dict[str, str] = {
    "fake": "The model found signs of the face manipulations it was trained on; this is a reason to look closer, "
    "not proof that the picture was faked.",
    "real": "The model found no sign of the manipulations it was trained on; this does not prove the picture is "
    "authentic, since methods it never saw can pass.",
    "inconclusive": "The score is too close to the threshold, or changed too much when the face was mirrored, for "
    "this model to call either way; it says neither fake nor real.",
    "no_face": "No face was found, so nothing was scored; this says nothing about whether the picture is genuine.",
    "error": "The file could not be read, so nothing was scored.",
}

# Models without a band chosen on validation get scores within this distance of the threshold, in logit space,
# as inconclusive: at threshold 0.5 the band is 0.38-0.62, at 0.771 it is 0.67-0.85.
DEFAULT_BAND_LOGIT = 0.5
# A face whose probability differs by more than this between its augmented views is inconclusive.
DEFAULT_MAX_SPREAD = 0.25


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class DecisionRule:
    """How a model's scores become verdicts: its threshold, the inconclusive band around it (None: the default
    band) and the largest spread across augmented views that still allows a call."""

    threshold: float
    band: tuple[float, float] | None = None
    max_spread: float = DEFAULT_MAX_SPREAD

    @property
    def default_band(self) -> bool:
        return self.band is None

    def band_at(self, threshold: float) -> tuple[float, float]:
        """The band at `threshold`: the model's own band moved with it (same distances in logit space), so a user's
        threshold keeps the band's width. A threshold of 0 or 1 leaves no band."""
        if not 0.0 < threshold < 1.0:
            return threshold, threshold
        if self.band is not None and threshold == self.threshold:
            return float(self.band[0]), float(self.band[1])  # exactly: the logit round trip adds float noise
        shift = _logit(threshold)
        if self.band is None or not 0.0 < self.threshold < 1.0:
            low, high = -DEFAULT_BAND_LOGIT, DEFAULT_BAND_LOGIT
        else:
            low, high = (_logit(min(max(v, 1e-9), 1 - 1e-9)) - _logit(self.threshold) for v in self.band)
        return _sigmoid(shift + low), _sigmoid(shift + high)

    def judge(self, score: float, threshold: float, spread: float | None = None) -> Label:
        """One face's (or person's) verdict at `threshold`."""
        if spread is not None and spread > self.max_spread:
            return "inconclusive"
        low, high = self.band_at(threshold)
        if score >= high:
            return "fake"
        return "real" if score < low else "inconclusive"


def combine(error: str | None, labels: list[Label]) -> Label:
    """An input's verdict from its faces' (or people's): fake if anyone is, else inconclusive if anyone is."""
    if error is not None:
        return "error"
    if not labels:
        return "no_face"
    for label in ("fake", "inconclusive"):
        if label in labels:
            return label
    return "real"


def rounded_band(band: tuple[float, float]) -> list[float]:
    return [round(float(band[0]), 4), round(float(band[1]), 4)]


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
    # Largest minus smallest fake probability across the test-time augmented views; None without augmentation.
    spread: float | None = None
    warnings: list[Caveat] = field(default_factory=list)

    def to_json(self, label: Label | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": [round(float(v), 1) for v in self.box],
            "detection_score": round(float(self.detection_score), 4),
            "score": round(float(self.score), 6),
        }
        if self.scores:
            out["scores"] = {kind: round(float(p), 6) for kind, p in self.scores.items()}
        if label is not None:
            out["label"] = label
            out["spread"] = None if self.spread is None else round(float(self.spread), 4)
            out["warnings"] = caveats_json(self.warnings)
        out["keypoints"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.keypoints]
        return out


class JudgedResult:
    """How a photo's or a video's result judges its faces: against its `threshold`, with the model's band and spread
    limit (`rule`) when it has them. Subclasses are dataclasses with `threshold` and `rule` fields."""

    threshold: float
    rule: DecisionRule | None

    @property
    def decision(self) -> DecisionRule:
        return self.rule or DecisionRule(self.threshold)

    @property
    def band(self) -> tuple[float, float]:
        """The inconclusive band at this result's threshold."""
        return self.decision.band_at(self.threshold)

    def face_label(self, face: FaceResult) -> Label:
        return self.decision.judge(face.score, self.threshold, face.spread)


@dataclass
class ImageResult(JudgedResult):
    """Everything known about one input image; `error` is set (and `faces` empty) when it could not be read."""

    path: str
    threshold: float
    model: str
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    width: int | None = None
    height: int | None = None
    rule: DecisionRule | None = None  # the model's; None: the default band around `threshold`
    tta: str = "none"  # the test-time augmentation the scores were averaged over
    warnings: list[Caveat] = field(default_factory=list)  # about the input as a whole
    provenance: Provenance | None = None

    @property
    def score(self) -> float | None:
        """The highest face score: an image is fake if any face in it is."""
        return max((f.score for f in self.faces), default=None)

    @property
    def label(self) -> Label:
        return combine(self.error, [self.face_label(f) for f in self.faces])

    @property
    def flagged(self) -> int:
        """How many faces are called fake."""
        return sum(self.face_label(f) == "fake" for f in self.faces)

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
        label = self.label
        return out | {
            "label": label,
            "explanation": EXPLANATIONS[label],
            "threshold": self.threshold,
            "band": rounded_band(self.band),
            "tta": self.tta,
            "model": self.model,
            "faces": [f.to_json(self.face_label(f)) for f in self.faces],
            "warnings": caveats_json(self.warnings),
            "error": self.error,
            "provenance": None if self.provenance is None else self.provenance.to_json(),
        }
