"""Typed results for a video and its one JSON form (a line of `aletheia detect`), beside `aletheia.results`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aletheia.results import FaceResult, Label, verdict
from aletheia.video.decode import VideoInfo


@dataclass
class VideoFace(FaceResult):
    """A face in one sampled frame, with the classifier's logit (score = sigmoid) and its track (None if dropped)."""

    logit: float = float("nan")
    track: int | None = None
    kind_logits: list[float] = field(default_factory=list, repr=False)  # per kind of fake, as FaceResult.scores

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "track": self.track}


@dataclass
class FrameResult:
    index: int  # frame number in the video
    time: float  # seconds from the start
    faces: list[VideoFace] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "time": round(self.time, 3), "faces": [f.to_json() for f in self.faces]}


@dataclass
class TrackResult:
    """One person: the frames they are seen in and one fake probability from all their faces."""

    id: int
    score: float
    frames: list[int]  # frame numbers in the video, as in FrameResult.index
    scores: dict[str, float] = field(default_factory=dict)  # per kind of fake, same strategy as `score`

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "score": round(float(self.score), 6)}
        if self.scores:
            out["scores"] = {kind: round(float(p), 6) for kind, p in self.scores.items()}
        return out | {"frames": self.frames}


@dataclass
class VideoResult:
    """Everything known about one video; `error` is set (frames and tracks empty) when it could not be read."""

    path: str
    threshold: float
    model: str
    frames: list[FrameResult] = field(default_factory=list)
    tracks: list[TrackResult] = field(default_factory=list)
    error: str | None = None
    strategy: str = "mean_logit"  # how each track's faces became its score
    info: VideoInfo | None = None

    @property
    def score(self) -> float | None:
        """The highest track score: a video is fake if anyone in it is."""
        return max((t.score for t in self.tracks), default=None)

    @property
    def label(self) -> Label:
        return verdict(self.error, self.score, self.threshold)

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
        return out | {
            "label": self.label,
            "threshold": self.threshold,
            "model": self.model,
            "frames": [f.to_json() for f in self.frames],
            "tracks": [t.to_json() for t in self.tracks],
            "error": self.error,
        }
