"""Videos through the pipeline: sampled frames -> faces -> classifier -> tracks -> per-person, per-video score.

Faces are cut with the pipeline's `crop_face` settings and scored by its classifier, so a face in a video is
treated as in a photo, but scored once rather than also mirrored (aletheia.tta.VIDEO_TTA: a person's score averages
their frames). Three things overlap: a thread decodes the next sampled frames while this one searches the frames
before for faces and classifies the faces found, a few at a time as they accumulate. Only the face crops (uint8) of
the sampled frames are kept, never the frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aletheia import tta as augment
from aletheia.caveats import face_caveats, rule_caveats, unstable_caveat
from aletheia.faces.extract import adaptive_min_face
from aletheia.io import InputError
from aletheia.overlap import prefetched
from aletheia.provenance import input_facts
from aletheia.results import ImageResult
from aletheia.video.decode import DEFAULT_NUM_FRAMES, SampledFrame, VideoInput, VideoReader, is_video_path
from aletheia.video.results import FrameResult, TrackResult, VideoFace, VideoResult
from aletheia.video.search import FrameFaceSearch
from aletheia.video.tracks import TRACK_STRATEGIES, TrackLinker, score_track

if TYPE_CHECKING:
    from aletheia.pipeline import DeepfakeDetectorPipeline

# Videos are searched for faces down to this fraction of the longer frame side (77 px in 1080p, 51 px in 720p; at
# least 40 px, see adaptive_min_face), not the 2% that photos get: the people a video is about are rarely smaller
# (the development videos' main faces are 5.5-26% of it), and the photos' finer level costs 1.7x per 1080p frame.
VIDEO_MIN_FACE_FRACTION = 0.04
# Sampled frames decoded ahead of the face search, by a thread of their own (a 1080p frame is 6 MB).
DECODE_AHEAD = 2
# Faces classified together as soon as this many are waiting (at most the pipeline's batch size), so that the
# classifier runs while frames are decoded: on a CPU a batch of 8 costs no more per face than one of 32.
CLASSIFY_EVERY = 8

# Called after each sampled frame (its faces found, full classifier batches run) with the frames done, the frames
# to sample and the faces found so far. It may raise to stop the video there (a cancelled job does).
FrameProgress = Callable[[int, int, int], None]


class VideoDetector:
    """Scores videos with a pipeline's face detector settings, face crop and classifier.

    `num_frames` evenly spaced frames are sampled, or one every 1/`fps` seconds when `fps` is given. Each track
    (person) is scored by `strategy` (see `aletheia.video.tracks`); the video gets the highest track score.
    The pipeline's `min_face_size`, when set, applies to videos too; otherwise VIDEO_MIN_FACE_FRACTION does.
    Every `full_detection_every`-th frame is searched whole, the others only around the faces already found (see
    `aletheia.video.search`); 1 searches every frame whole. `tta` is the test-time augmentation of the faces
    (None: aletheia.tta.VIDEO_TTA, each face scored once). Not thread-safe: one VideoDetector per thread.
    """

    def __init__(
        self,
        pipeline: DeepfakeDetectorPipeline,
        *,
        num_frames: int = DEFAULT_NUM_FRAMES,
        fps: float | None = None,
        strategy: str = "mean_logit",
        linker: TrackLinker | None = None,
        full_detection_every: int = 4,
        tta: str | None = None,
    ) -> None:
        if strategy not in TRACK_STRATEGIES:
            raise ValueError(f"unknown track strategy {strategy!r}; choose one of {tuple(TRACK_STRATEGIES)}")
        if num_frames < 1 or (fps is not None and fps <= 0):
            raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
        self.pipeline = pipeline
        self.num_frames, self.fps, self.strategy = num_frames, fps, strategy
        self.tta = augment.VIDEO_TTA if tta is None else augment.check_mode(tta)
        self.linker = linker or TrackLinker()
        self._fixed_min_face = pipeline.detector.min_face_size
        self.detector = dataclasses.replace(pipeline.detector)  # own copy: its min_face_size is set per video
        self.search = FrameFaceSearch(self.detector, full_every=full_detection_every)

    def predict(
        self, source: VideoInput, *, path: str | None = None, on_frame: FrameProgress | None = None
    ) -> VideoResult:
        """Score one video: a path, uploaded bytes or a binary file object (`path` names it in the result).

        Raises `InputError` when it cannot be read; `predict_many` reports that instead. `on_frame` hears of each
        sampled frame as it is done (see FrameProgress); whatever it raises ends the video.
        """
        pipeline = self.pipeline
        name = path or (str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>")
        facts = input_facts(source)
        result = self._empty_result(name, facts)
        result.warnings = rule_caveats(pipeline.rule.default_band, self.tta, video=True)
        faces: list[VideoFace] = []
        crops: list[np.ndarray] = []  # waiting for a full classifier batch
        logits: list[np.ndarray] = []
        spreads: list[np.ndarray] = []
        with VideoReader(source, name) as reader:
            result.info = info = reader.info
            if self._fixed_min_face is None:
                longest = max(info.width, info.height)
                self.detector.min_face_size = adaptive_min_face(longest, VIDEO_MIN_FACE_FRACTION)
            self.search.reset()
            times = reader.sample_times(self.num_frames, self.fps)
            # Closed (its thread stopped) before the reader is, also when a frame's work raises.
            with closing(prefetched(reader.frames(times), DECODE_AHEAD)) as frames:
                for frame in frames:
                    frame_result, frame_crops = self._search_frame(frame)
                    result.frames.append(frame_result)
                    faces.extend(frame_result.faces)
                    crops = self._classify_full_batches(crops + frame_crops, logits, spreads)
                    if on_frame is not None:
                        on_frame(len(result.frames), len(times), len(faces))
        if crops:
            self._classify(crops, logits, spreads)
        # Column 0: the overall fake logit; then one per kind of fake, for models that score kinds.
        rows = np.concatenate(logits) if logits else []
        spread = np.concatenate(spreads) if spreads else [None] * len(faces)
        limit = pipeline.rule.max_spread
        for face, row, moved in zip(faces, rows, spread, strict=True):
            face.logit = float(row[0])
            face.score = float(_sigmoid(row[0]))
            face.kind_logits = [float(v) for v in row[1:]]
            face.scores = {kind: float(_sigmoid(v)) for kind, v in zip(pipeline.kinds, row[1:], strict=True)}
            if moved is not None:
                face.spread = float(moved)
                if face.spread > limit:
                    face.warnings.append(unstable_caveat(face.spread, limit))
        self._add_tracks(result)
        return result

    def _search_frame(self, frame: SampledFrame) -> tuple[FrameResult, list[np.ndarray]]:
        """A sampled frame's faces (not yet scored) and their crops, in the same order."""
        result = FrameResult(index=frame.index, time=frame.time)
        height, width = frame.image.shape[:2]
        crops = []
        for face in self.search(frame.image):
            crop = self.pipeline.crop_face(frame.image, face.box)
            warnings = face_caveats(face.box, crop, width, height)
            result.faces.append(
                VideoFace(
                    face.box, face.keypoints, face.detection_score, score=float("nan"), warnings=warnings
                )
            )
            crops.append(crop)
        return result, crops

    def _empty_result(self, name: str, facts=None, error: str | None = None) -> VideoResult:
        pipeline = self.pipeline
        return VideoResult(
            path=name, threshold=pipeline.threshold, model=pipeline.model_label, strategy=self.strategy,
            rule=pipeline.rule, tta=self.tta, provenance=pipeline.provenance(facts), error=error,
        )  # fmt: skip

    def _classify(self, crops: list[np.ndarray], logits: list[np.ndarray], spreads: list[np.ndarray]) -> None:
        answer = self.pipeline.classify(np.stack(crops), tta=self.tta)
        logits.append(np.column_stack([answer.logits, answer.kind_logits]))
        if answer.spread is not None:
            spreads.append(answer.spread)

    def predict_many(self, sources: Iterable[str | Path]) -> Iterator[VideoResult]:
        """Score many videos in order; one that cannot be read yields a result with `error` set."""
        for source in sources:
            try:
                yield self.predict(source)
            except InputError as exc:
                yield self.error_result(str(source), str(exc))

    def error_result(self, path: str, error: str) -> VideoResult:
        """The result of a video that could not be read (its hash when its bytes could be)."""
        return self._empty_result(path, input_facts(path), error=error)

    def _classify_full_batches(
        self, crops: list[np.ndarray], logits: list[np.ndarray], spreads: list[np.ndarray]
    ) -> list[np.ndarray]:
        """Classify as many batches of CLASSIFY_EVERY (or the pipeline's batch size) as are waiting; return the
        crops left over."""
        size = min(self.pipeline.batch_size, CLASSIFY_EVERY)
        ready = len(crops) // size * size
        if ready:
            self._classify(crops[:ready], logits, spreads)
        return crops[ready:]

    def _add_tracks(self, result: VideoResult) -> None:
        boxes = [
            np.array([f.box for f in frame.faces], dtype=np.float32).reshape(-1, 4) for frame in result.frames
        ]
        for number, track in enumerate(self.linker.link(boxes)):
            members = [result.frames[t].faces[j] for t, j in track]
            for face in members:
                face.track = number
            kinds = {kind: score_track([f.kind_logits[k] for f in members], self.strategy)
                     for k, kind in enumerate(self.pipeline.kinds)}  # fmt: skip
            result.tracks.append(
                TrackResult(
                    id=number,
                    score=score_track([f.logit for f in members], self.strategy),
                    frames=[result.frames[t].index for t, _ in track],
                    scores=kinds,
                )
            )


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def predict_media(
    pipeline: DeepfakeDetectorPipeline,
    sources: Iterable[str | Path],
    *,
    assume_face: bool = False,
    videos: VideoDetector | None = None,
) -> Iterator[ImageResult | VideoResult]:
    """Images and videos (told apart by extension) in input order: runs of images are batched by the pipeline,
    videos scored one by one by `videos` (default settings if not given). `assume_face` applies to images only."""
    videos = videos or VideoDetector(pipeline)
    for is_video, group in groupby(sources, key=is_video_path):
        if is_video:
            yield from videos.predict_many(group)
        else:
            yield from pipeline.predict_many(group, assume_face=assume_face)
