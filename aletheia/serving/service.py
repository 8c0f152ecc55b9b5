"""The models a server holds and the one way the web app and the REST API score an upload (photo or video) with them.

Pipelines load once, at start. Each request brings its own threshold: results are relabelled per request and the
shared pipelines are never mutated, so concurrent users with different thresholds cannot disturb each other.
Videos get a VideoDetector of their own per request (it keeps per-video state), run under the model's gate, which
they open for photos between frames (see gate.py): a video never holds up a photo for longer than one frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from aletheia.io import InputError, load_image_within
from aletheia.pipeline import DeepfakeDetectorPipeline
from aletheia.provenance import input_facts
from aletheia.results import ImageResult
from aletheia.serving.gate import ModelGate
from aletheia.tta import check_mode
from aletheia.video import (
    DEFAULT_NUM_FRAMES,
    TRACK_STRATEGIES,
    VideoDetector,
    VideoInput,
    VideoResult,
    is_video_path,
)
from aletheia.video.detect import FrameProgress

# Enough to follow every person through a long clip; each sampled frame costs a face search.
MAX_VIDEO_FRAMES = 256
# Face crops kept per person for the web app's gallery: the first, middle and last sighting.
CROPS_PER_TRACK = 3
# The memory budget of photo uploads (8 concurrent bombs keep the server under 1.5 GB, with two slots: see
# benchmarks/load_server.py). A larger JPEG is decoded at 1/2, 1/4 or 1/8 size (faces stay far above the
# detector's smallest), other formats are refused (413): an 87 KB PNG can otherwise cost 1 GB. At most
# DECODE_SLOTS photos are decoded or held at once, so a burst of small decompression bombs cannot add up: one
# decodes while another is scored, and inference on a model is serialised anyway. They are decoded and scored on
# that many threads of the service's own, not on whichever of the web server's 40 threads took the request: every
# thread that allocates large buffers keeps memory of its own (a malloc arena), and 50 clients grew the server by
# a third that way.
DECODE_PIXELS = 16_000_000
DECODE_SLOTS = 2


class UnknownServedModelError(LookupError):
    """A request named a model this server does not hold; the message lists those it does."""


@dataclass
class Detection:
    """A scored upload: the decoded image (for drawing) and its result at the request's threshold."""

    image: np.ndarray
    result: ImageResult


@dataclass
class VideoDetection:
    """A scored video upload: its result at the request's threshold. When asked for, the faces picked for display
    (`CROPS_PER_TRACK` per track) carry their crops in `face.crop`; no frame is kept."""

    result: VideoResult


R = TypeVar("R", ImageResult, VideoResult)


def with_threshold(result: R, threshold: float) -> R:
    """The same result judged at another threshold (labels derive from it); the original is left untouched.

    Photos and videos alike: a video's label is its best track score against the threshold, track scores stay.
    """
    return dataclasses.replace(result, threshold=float(threshold))


# Container signatures of the video formats the server reads (VIDEO_EXTENSIONS): ISO BMFF/QuickTime boxes at
# offset 4 (MP4, MOV), the EBML magic (Matroska, WebM) and RIFF/AVI.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
# ... except that AVIF and HEIF photos are ISO BMFF files too, told by the major brand of their ftyp box.
_IMAGE_BRANDS = (b"avif", b"avis", b"mif1", b"msf1", b"heic", b"heix", b"heim", b"heis")


def looks_like_video(data: bytes) -> bool:
    """Whether the bytes start like an MP4/MOV, MKV/WebM or AVI file (a cheap sniff, not a validation)."""
    if data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS:
        return False
    return (
        data[4:8] in _MP4_BOXES
        or data.startswith(b"\x1a\x45\xdf\xa3")
        or (data.startswith(b"RIFF") and data[8:12] == b"AVI ")
    )


def is_video_upload(data: bytes, name: str) -> bool:
    """Photo first, then video: an upload is a video when its bytes look like one, or when it is named like one
    and its bytes are not an image PIL recognises (so a corrupt "clip.mp4" is reported as a bad video)."""
    if looks_like_video(data):
        return True
    if not is_video_path(name):
        return False
    return not _is_image(data)


def _is_image(data: bytes) -> bool:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Image.DecompressionBombError:  # an image all the same, refused as one (413)
        return True
    except Exception:  # UnidentifiedImageError, or a header no plugin could parse
        return False


def load_pipelines(
    specs: Sequence[str], *, arch: str | None = None, device: str = "cpu", **pipeline_kwargs: Any
) -> dict[str, DeepfakeDetectorPipeline]:
    """Load each model spec (aletheia.models.spec: a bundled model's name, published weights, a file) once, keyed
    by its result label. No specs: the default bundled model. `arch` names the architecture of checkpoint files
    whose keys do not tell it. Errors (CheckpointError, UnknownModelError, ValueError) propagate with their messages.
    """
    from aletheia.models.spec import resolve_model_spec

    pipelines: dict[str, DeepfakeDetectorPipeline] = {}
    for spec in specs or [None]:
        pipeline = DeepfakeDetectorPipeline(
            resolve_model_spec(spec, arch=arch), None, device, **pipeline_kwargs
        )
        name, n = pipeline.model_label, 2
        while name in pipelines:  # two checkpoints with the same file name stay selectable
            name, n = f"{pipeline.model_label} ({n})", n + 1
        pipelines[name] = pipeline
    return pipelines


class DetectionService:
    """Named pipelines (the first is the default), each guarded by its own gate.

    The pipelines make no thread-safety promise, and the web app's queue, the REST API's thread pool and the job
    worker call in from different threads, so inference on one model is serialised (photos first, see gate.py);
    different models may run side by side.
    """

    def __init__(self, pipelines: Mapping[str, DeepfakeDetectorPipeline]) -> None:
        if not pipelines:
            raise ValueError("a server needs at least one model")
        self.pipelines = dict(pipelines)
        self._gates = {name: ModelGate() for name in self.pipelines}
        self._photo_workers = ThreadPoolExecutor(DECODE_SLOTS, thread_name_prefix="aletheia-photo")

    @property
    def default_model(self) -> str:
        return next(iter(self.pipelines))

    @property
    def model_names(self) -> list[str]:
        return list(self.pipelines)

    def resolve(self, model: str | None) -> str:
        """The name of a held model (None: the default), named as listed or by a spec it was loaded from
        ("aletheia-lite2" for "aletheia-lite2.pth"); raises UnknownServedModelError otherwise. Names only: a request
        never makes the server look for a file."""
        if model is None or model == "":
            return self.default_model
        if model in self.pipelines:
            return model
        for name, pipeline in self.pipelines.items():
            if model in pipeline.model_spec.aliases:
                return name
        raise UnknownServedModelError(
            f"unknown model {model!r}; this server has: {', '.join(self.pipelines)}"
        )

    def default_threshold(self, model: str | None = None) -> float:
        return self.pipelines[self.resolve(model)].threshold

    def describe_models(self) -> list[dict[str, Any]]:
        rows = []
        for name, pipeline in self.pipelines.items():
            config = pipeline.config
            rows.append(
                {
                    "name": name,
                    "architecture": config.name,
                    "threshold": pipeline.threshold,
                    "band": list(pipeline.rule.band_at(pipeline.threshold)),
                    "band_validated": not pipeline.rule.default_band,
                    "tta": pipeline.tta,
                    "sha256": pipeline.model_sha256,
                    "input_size": config.input_size,
                    "has_attention": config.has_attention,
                    "description": config.description,
                    "default": name == self.default_model,
                }
            )
        return rows

    def detect(
        self,
        data: bytes,
        name: str,
        *,
        model: str | None = None,
        threshold: float | None = None,
        assume_face: bool = False,
        return_attention: bool = False,
        tta: str | None = None,
    ) -> Detection:
        """Decode and score one uploaded file; `name` (the upload's filename) becomes the result's `path`.

        Raises InputError, with `name` in its message, for a file that is not a usable image (TooLargeError for
        one over the decoding budget, DECODE_PIXELS). A large JPEG is scored at reduced size: the result's boxes,
        keypoints and size are those of the original, `image` is the reduced one.
        """
        key = self.resolve(model)
        pipeline = self.pipelines[key]
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if tta is not None:
            check_mode(tta)
        # The decoded photo lives until it is scored: one worker does both.
        work = self._photo_workers.submit(
            self._decode_and_score, data, name, key, assume_face, return_attention, tta
        )
        image, scale, result = work.result()
        if scale != 1.0:
            result = _scaled(result, scale)
        return Detection(
            image, with_threshold(result, pipeline.threshold if threshold is None else threshold)
        )

    def _decode_and_score(
        self, data: bytes, name: str, key: str, assume_face: bool, return_attention: bool, tta: str | None
    ) -> tuple[np.ndarray, float, ImageResult]:
        try:
            image, scale = load_image_within(data, DECODE_PIXELS)
        except InputError as exc:
            raise type(exc)(_rename(str(exc), f"<{len(data)} bytes>", name)) from exc
        facts = input_facts(data)  # of the upload as sent, not of the decoded pixels
        with self._gates[key].photo():
            result = (
                self.pipelines[key]
                .with_tta(tta)
                .predict(
                    image, assume_face=assume_face, return_attention=return_attention, path=name, facts=facts
                )
            )
        return image, scale, result

    def detect_video(
        self,
        data: VideoInput,
        name: str,
        *,
        model: str | None = None,
        threshold: float | None = None,
        num_frames: int = DEFAULT_NUM_FRAMES,
        strategy: str = "mean_logit",
        keep_crops: bool = False,
        tta: str | None = None,
        on_frame: FrameProgress | None = None,
    ) -> VideoDetection:
        """Score one uploaded video (its bytes, or the path it was saved to): `num_frames` evenly spaced frames,
        each person's faces linked into a track and scored by `strategy`. `name` (the upload's filename) becomes
        the result's `path`. `keep_crops`: the faces picked for display carry their crops. `on_frame` hears of
        each frame done, and may raise to stop the video there.

        Raises InputError, with `name` in its message, for a file that is not a readable video.
        """
        key = self.resolve(model)
        pipeline = self.pipelines[key]
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if not 1 <= num_frames <= MAX_VIDEO_FRAMES:
            raise ValueError(f"frames must be between 1 and {MAX_VIDEO_FRAMES}, got {num_frames}")
        if strategy not in TRACK_STRATEGIES:
            raise ValueError(
                f"unknown track strategy {strategy!r}; choose one of {', '.join(TRACK_STRATEGIES)}"
            )
        pipeline = pipeline.with_tta(tta)
        recorder = _CropRecorder(pipeline) if keep_crops else None
        videos = VideoDetector(
            cast(DeepfakeDetectorPipeline, recorder or pipeline),
            num_frames=num_frames,
            strategy=strategy,
            tta=tta,
        )
        gate = self._gates[key]

        def between_frames(done: int, total: int, faces: int) -> None:
            gate.let_photos_through()
            if on_frame is not None:
                on_frame(done, total, faces)

        with gate.video():
            result = videos.predict(data, path=name, on_frame=between_frames)
        if recorder is not None:
            _keep_display_crops(result, recorder.crops)
        return VideoDetection(with_threshold(result, pipeline.threshold if threshold is None else threshold))


def _scaled(result: ImageResult, scale: float) -> ImageResult:
    """A result found on a reduced image, in the original image's pixels."""
    faces = [
        dataclasses.replace(face, box=face.box * scale, keypoints=face.keypoints * scale)
        for face in result.faces
    ]
    size = {k: round(v * scale) for k in ("width", "height") if (v := getattr(result, k)) is not None}
    return dataclasses.replace(result, faces=faces, **size)


class _CropRecorder:
    """Stands in for a pipeline inside a VideoDetector and keeps the face crops the classifier is given.

    The detector classifies its faces in order (that is how it pairs logits with faces), so the crops recorded
    here line up with the result's faces, frame by frame.
    """

    def __init__(self, pipeline: DeepfakeDetectorPipeline) -> None:
        self._pipeline = pipeline
        self.crops: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def classify(self, crops: np.ndarray, return_attention: bool = False, tta: str | None = None) -> Any:
        self.crops.extend(np.array(crop) for crop in crops)
        return self._pipeline.classify(crops, return_attention, tta)


def _keep_display_crops(result: VideoResult, crops: list[np.ndarray]) -> None:
    """Give the first, middle and last face of each track its crop; every other crop is dropped."""
    faces = [face for frame in result.frames for face in frame.faces]
    if len(faces) != len(crops):  # never expected; show no crops rather than wrong ones
        return
    by_track: dict[int, list[int]] = {}
    for number, face in enumerate(faces):
        if face.track is not None:
            by_track.setdefault(face.track, []).append(number)
    for members in by_track.values():
        picks = np.unique(np.linspace(0, len(members) - 1, min(CROPS_PER_TRACK, len(members))).round())
        for pick in picks.astype(int):
            faces[members[pick]].crop = crops[members[pick]]


def upload_name(filename: str | Path | None) -> str:
    """The base name of an upload as the client called it; never a server-side temp path."""
    base = Path(str(filename or "")).name
    return base or "upload"


def _rename(message: str, described: str, name: str) -> str:
    # io describes bytes as "<N bytes>"; the user knows the file by its name.
    return name + message[len(described) :] if message.startswith(described) else f"{name}: {message}"
