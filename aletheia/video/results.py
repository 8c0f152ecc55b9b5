"""Typed results for a video and its one JSON form (a line of `aletheia detect`), beside `aletheia.results`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aletheia.caveats import DISAGREE_SHARE, Caveat, caveats_json, disagree_caveat
from aletheia.provenance import Provenance
from aletheia.results import (
    EXPLANATIONS,
    DecisionRule,
    FaceResult,
    JudgedResult,
    Label,
    combine,
    rounded_band,
)
from aletheia.video.decode import VideoInfo


@dataclass
class VideoFace(FaceResult):
    """A face in one sampled frame, with the classifier's logit (score = sigmoid) and its track (None if dropped)."""

    logit: float = float("nan")
    track: int | None = None
    kind_logits: list[float] = field(
        default_factory=list, repr=False
    )  # per kind of fake, as FaceResult.scores

    def to_json(self, label: Label | None = None) -> dict[str, Any]:
        return {**super().to_json(label), "track": self.track}


@dataclass
class FrameResult:
    index: int  # frame number in the video
    time: float  # seconds from the start
    faces: list[VideoFace] = field(default_factory=list)

    def to_json(self, judge: Any = None) -> dict[str, Any]:
        faces = [f.to_json(None if judge is None else judge(f)) for f in self.faces]
        return {"index": self.index, "time": round(self.time, 3), "faces": faces}


@dataclass
class TrackResult:
    """One person: the frames they are seen in and one fake probability from all their faces."""

    id: int
    score: float
    frames: list[int]  # frame numbers in the video, as in FrameResult.index
    scores: dict[str, float] = field(default_factory=dict)  # per kind of fake, same strategy as `score`

    def to_json(self, label: Label | None = None, warnings: list[Caveat] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": round(float(self.score), 6)}
        if self.scores:
            out["scores"] = {kind: round(float(p), 6) for kind, p in self.scores.items()}
        if label is not None:
            out["label"] = label
            out["warnings"] = caveats_json(warnings or [])
        return out | {"frames": self.frames}


@dataclass
class VideoResult(JudgedResult):
    """Everything known about one video; `error` is set (frames and tracks empty) when it could not be read."""

    path: str
    threshold: float
    model: str
    frames: list[FrameResult] = field(default_factory=list)
    tracks: list[TrackResult] = field(default_factory=list)
    error: str | None = None
    strategy: str = "mean_logit"  # how each track's faces became its score
    info: VideoInfo | None = None
    rule: DecisionRule | None = None  # the model's; None: the default band around `threshold`
    tta: str = "none"
    warnings: list[Caveat] = field(default_factory=list)  # about the video as a whole
    provenance: Provenance | None = None

    def track_verdict(self, track: TrackResult) -> tuple[Label, list[Caveat]]:
        """A person's verdict and warnings: their score against the band, made inconclusive when at least
        DISAGREE_SHARE of their faces fall on the other side of the threshold."""
        label = self.decision.judge(track.score, self.threshold)
        scores = [f.score for fr in self.frames for f in fr.faces if f.track == track.id]
        if label == "inconclusive" or not scores:
            return label, []
        other = sum((s < self.threshold) if label == "fake" else (s >= self.threshold) for s in scores)
        if other >= DISAGREE_SHARE * len(scores):
            return "inconclusive", [disagree_caveat(other, len(scores))]
        return label, []

    @property
    def flagged(self) -> int:
        """How many people are called fake."""
        return sum(self.track_verdict(t)[0] == "fake" for t in self.tracks)

    @property
    def score(self) -> float | None:
        """The highest track score: a video is fake if anyone in it is."""
        return max((t.score for t in self.tracks), default=None)

    @property
    def label(self) -> Label:
        return combine(self.error, [self.track_verdict(t)[0] for t in self.tracks])

    @property
    def scores(self) -> dict[str, float]:
        """Per kind of fake, the highest track probability (empty for one-output models or without tracks)."""
        kinds = self.tracks[0].scores if self.tracks else {}
        return {kind: max(t.scores[kind] for t in self.tracks) for kind in kinds}

    def to_json(self) -> dict[str, Any]:
        score = self.score
        out: dict[str, Any] = {
            "path": self.path,
            "kind": "video",
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
            "frames": [f.to_json(self.face_label) for f in self.frames],
            "tracks": [t.to_json(*self.track_verdict(t)) for t in self.tracks],
            "warnings": caveats_json(self.warnings),
            "error": self.error,
            "provenance": None if self.provenance is None else self.provenance.to_json(),
        }
