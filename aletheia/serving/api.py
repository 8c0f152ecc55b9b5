"""REST API under /api/v1: detect, jobs, health, models. Every error is JSON `{"detail": message}`; bad input is 4xx, never 500.

`POST /detect` takes a photo or a video and answers with the same JSON object as one line of `aletheia detect`
(`ImageResult.to_json`, or `VideoResult.to_json` with "kind": "video"), the upload's filename standing in for the path. `POST /jobs` takes the same upload off the request path (jobs.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import aletheia
from aletheia.io import MAX_IMAGE_PIXELS, InputError, TooLargeError
from aletheia.serving.jobs import Job, JobQueue, QueueFullError
from aletheia.serving.service import (
    MAX_VIDEO_FRAMES,
    DetectionService,
    UnknownServedModelError,
    is_video_upload,
    upload_name,
)
from aletheia.video import DEFAULT_NUM_FRAMES

API_PREFIX = "/api/v1"
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# A request body that sends nothing for this long is given up (408) and its connection closed: stalled uploads
# would otherwise hold a connection, and a file descriptor, for ever.
DEFAULT_BODY_TIMEOUT_SECONDS = 20.0
# Multipart framing and the small form fields ride on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

log = logging.getLogger("aletheia.serving")


# -- response shapes, for the OpenAPI docs (responses are ImageResult.to_json() itself, never re-serialised) ----


Verdict = Literal["fake", "real", "inconclusive", "no_face", "error"]


class ResultWarning(BaseModel):
    code: str
    message: str


class Provenance(BaseModel):
    aletheia_version: str
    model_sha256: str | None
    input_sha256: str | None
    created: str


class Face(BaseModel):
    box: list[float]
    detection_score: float
    score: float
    scores: dict[str, float] | None = None
    label: Literal["fake", "real", "inconclusive"]
    spread: float | None
    warnings: list[ResultWarning]
    keypoints: list[list[float]]


class DetectResult(BaseModel):
    path: str
    kind: Literal["image"]
    score: float | None
    scores: dict[str, float] | None = None
    label: Verdict
    explanation: str
    threshold: float
    band: list[float]
    tta: str
    model: str
    faces: list[Face]
    warnings: list[ResultWarning]
    error: str | None
    provenance: Provenance | None


class VideoFace(Face):
    track: int | None


class VideoFrame(BaseModel):
    index: int
    time: float
    faces: list[VideoFace]


class Track(BaseModel):
    id: int
    score: float
    scores: dict[str, float] | None = None
    label: Literal["fake", "real", "inconclusive"]
    warnings: list[ResultWarning]
    frames: list[int]


class VideoDetectResult(BaseModel):
    path: str
    kind: Literal["video"]
    score: float | None
    scores: dict[str, float] | None = None
    label: Verdict
    explanation: str
    threshold: float
    band: list[float]
    tta: str
    model: str
    frames: list[VideoFrame]
    tracks: list[Track]
    warnings: list[ResultWarning]
    error: str | None
    provenance: Provenance | None


class ErrorDetail(BaseModel):
    detail: str


class JobCreated(BaseModel):
    id: str


class JobProgress(BaseModel):
    frames_done: int | None
    frames_total: int | None
    faces: int | None


class JobState(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "error", "cancelled"]
    kind: Literal["image", "video"]
    name: str
    progress: JobProgress
    created: str
    started: str | None
    ended: str | None
    result: DetectResult | VideoDetectResult | None
    error: str | None


class ModelInfo(BaseModel):
    name: str
    architecture: str
    threshold: float
    band: list[float]
    band_validated: bool
    tta: str
    sha256: str | None
    input_size: int
    has_attention: bool
    description: str
    default: bool


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    default_model: str
    models: list[str]


# -- the upload size limit ---------------------------------------------------------------------------------------


def too_large_message(max_upload_bytes: int) -> str:
    return f"the upload is larger than this server's limit of {max_upload_bytes / 2**20:.1f} MiB"


class UploadLimitMiddleware:
    """Stops reading a request body under `path_prefix` once it passes the limit, and answers 413.

    A declared Content-Length over the limit is refused before any byte is read; a chunked body is counted as it
    arrives, so an oversized upload is never buffered or spooled to disk in full.
    """

    def __init__(self, app: ASGIApp, *, path_prefix: str, max_upload_bytes: int) -> None:
        self.app = app
        self.path_prefix = path_prefix
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + MULTIPART_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        message = too_large_message(self.max_upload_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises HTTPExceptions from body parsing, so this becomes the JSON 413.
                    raise HTTPException(status_code=413, detail=message)
            return event

        await self.app(scope, limited_receive, send)


CLOSE = {"Connection": "close"}


def stalled_message(timeout: float) -> str:
    return f"the request body stalled: nothing arrived for {timeout:g} s"


class BodyTimeoutMiddleware:
    """Gives up on a request body once no part of it has arrived for `timeout` seconds: 408, connection closed.

    Only the body is timed: once it is complete, waiting for the client (a streamed response watching for a
    disconnect) is not. Idle connections between requests are uvicorn's keep-alive timeout's to close.
    """

    def __init__(self, app: ASGIApp, *, timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete, response_started = False, False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                event = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                # FastAPI re-raises HTTPExceptions from body parsing, so this becomes the JSON 408; "close" has
                # uvicorn close the connection at once (its body was never read to the end).
                raise HTTPException(408, stalled_message(self.timeout), headers=CLOSE) from None
            body_complete = event["type"] == "http.disconnect" or not event.get("more_body", False)
            return event

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except HTTPException as exc:  # raised where no FastAPI handler turned it into a response
            if exc.status_code != 408 or response_started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=408, headers=CLOSE)(scope, receive, send)


# -- mapping bad files to status codes -------------------------------------------------------------------------------


def probe_upload(data: bytes, name: str) -> tuple[int, str] | None:
    """(status, message) for an upload refused from its header alone: 415 unknown format, 413 too many pixels.

    Anything else (empty, truncated, corrupt) is left to `load_image`, whose InputError becomes a 422.
    """
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except UnidentifiedImageError:
        return 415, (
            f"{name}: not a recognised image format, nor a video (send a photo: JPEG, PNG, WebP, BMP, TIFF or "
            "GIF; or a video: MP4, MOV, WebM, MKV or AVI)"
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return 413, f"{name}: the image has too many pixels to decode safely"
    except Exception:  # a header PIL cannot parse is load_image's to report, as a 422
        return None
    if width * height > MAX_IMAGE_PIXELS:
        return 413, f"{name}: image is {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}"
    return None


# -- the upload form that POST /detect and POST /jobs share ---------------------------------------------------------


@dataclass
class DetectForm:
    file: UploadFile
    threshold: float | None
    model: str | None
    assume_face: bool
    frames: int
    track_strategy: str
    tta: str | None

    def photo_settings(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "assume_face": self.assume_face,
            "tta": self.tta,
        }

    def video_settings(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "num_frames": self.frames,
            "strategy": self.track_strategy,
            "tta": self.tta,
        }


def detect_form(
    file: Annotated[
        UploadFile,
        File(description="a photo, or a video (MP4, MOV, WebM, MKV, AVI; told by its contents or file name)"),
    ],
    threshold: Annotated[
        float | None,
        Form(
            ge=0.0,
            le=1.0,
            description="fake probability at or above which a face (in a video: a person) is called fake; "
            "default: the model's",
        ),
    ] = None,
    model: Annotated[
        str | None,
        Form(
            description="a name from GET /api/v1/models, or the model spec the server was started with "
            "(`aletheia-lite2` for `aletheia-lite2.pth`); default: the first"
        ),
    ] = None,
    assume_face: Annotated[
        bool,
        Form(description="photos only: skip face detection and score the whole image as one face crop"),
    ] = False,
    frames: Annotated[
        int,
        Form(
            ge=1,
            le=MAX_VIDEO_FRAMES,
            description="videos only: how many evenly spaced frames to sample and search for faces",
        ),
    ] = DEFAULT_NUM_FRAMES,
    track_strategy: Annotated[
        Literal["mean_logit", "confident", "max"],
        Form(
            description="videos only: how a person's faces become one score (mean_logit: sigmoid of "
            "the mean logit; confident: the DFDC winner's rule, the mean of the confident faces when most "
            "are; max: the most fake-looking face)"
        ),
    ] = "mean_logit",
    tta: Annotated[
        Literal["none", "mirror", "mirror_zoom"] | None,
        Form(
            description="test-time augmentation: each face is also scored mirrored (mirror_zoom: and zoomed) "
            "and the views averaged; a face whose views disagree is inconclusive. Default: the server's (mirror) "
            "for photos, none for videos (a person's score averages their frames)"
        ),
    ] = None,
) -> DetectForm:
    return DetectForm(file, threshold, model, assume_face, frames, track_strategy, tta)


# -- routes ---------------------------------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorDetail, "description": "The upload or its pixel count is over the limit"},
    415: {
        "model": ErrorDetail,
        "description": "The file is neither an image nor a video format this server reads",
    },
    422: {
        "model": ErrorDetail,
        "description": "Corrupt, truncated or empty image or video, or a bad parameter",
    },
}


def _job_or_404(job: Job | None, job_id: str) -> Job:
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} on this server (ended jobs are kept for an hour)")
    return job


def build_api_router(
    service: DetectionService, jobs: JobQueue, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)

    @router.get("/health", response_model=Health, tags=["detection"])
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": aletheia.__version__,
            "default_model": service.default_model,
            "models": service.model_names,
        }

    @router.get("/models", response_model=ModelList, tags=["detection"])
    def models() -> dict[str, Any]:
        return {"default": service.default_model, "models": service.describe_models()}

    @router.get(
        "/model-card",
        response_class=PlainTextResponse,
        responses={404: {"model": ErrorDetail, "description": "No model card is kept with this model"}},
    )
    def model_card(model: str | None = None) -> PlainTextResponse:
        """The model card (markdown) kept beside a model's weights: what it was trained on and where it fails.
        `model`: a name from GET /api/v1/models, or the `model` of a result; default: the first."""
        try:
            pipeline = service.pipelines[service.resolve(model)]
        except UnknownServedModelError as exc:
            raise HTTPException(404, str(exc)) from exc
        weights = pipeline.config.weights_path
        card = Path(weights).parent / "MODEL_CARD.md" if weights else None
        if card is None or not card.is_file():
            raise HTTPException(404, f"no model card is kept with {pipeline.model_label}")
        return PlainTextResponse(card.read_text(encoding="utf-8"), media_type="text/plain; charset=utf-8")

    async def read_upload_form(form: DetectForm) -> tuple[bytes, str, bool]:
        """The upload's bytes, its name and whether it is a video; HTTPException for one refused up front."""
        data = await form.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, too_large_message(max_upload_bytes))
        name = upload_name(form.file.filename)
        video = is_video_upload(data, name)
        if not video and (refused := probe_upload(data, name)):
            raise HTTPException(*refused)
        return data, name, video

    @router.post(
        "/detect",
        tags=["detection"],
        responses={
            200: {
                "model": DetectResult | VideoDetectResult,
                "description": 'One result, as a line of `aletheia detect`: a photo\'s, or a video\'s ("kind": "video")',
            },
            **_ERRORS,
        },
    )
    async def detect(form: Annotated[DetectForm, Depends(detect_form)]) -> JSONResponse:
        """Score every face in one uploaded photo, or every person (face track) in one uploaded video.

        A video is scored on `frames` evenly spaced frames; its faces are linked into one track per person, each
        track gets one score (`track_strategy`), and the video the highest of them. A long video is better sent to
        `POST /jobs`, which answers at once and reports progress.
        """
        data, name, video = await read_upload_form(form)
        if video:
            try:
                scored = await run_in_threadpool(service.detect_video, data, name, **form.video_settings())
            except (InputError, UnknownServedModelError) as exc:
                raise HTTPException(422, str(exc)) from exc
            return JSONResponse(scored.result.to_json())
        try:
            detection = await run_in_threadpool(service.detect, data, name, **form.photo_settings())
        except TooLargeError as exc:
            raise HTTPException(413, str(exc)) from exc
        except (InputError, UnknownServedModelError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return JSONResponse(detection.result.to_json())

    @router.post(
        "/jobs",
        status_code=202,
        response_model=JobCreated,
        responses={
            503: {"model": ErrorDetail, "description": "Too many jobs queued or running; try again later"},
            **_ERRORS,
        },
        tags=["jobs"],
    )
    async def create_job(form: Annotated[DetectForm, Depends(detect_form)]) -> JSONResponse:
        """Queue a photo or a video (the same fields as `POST /detect`) and answer at once with the job's id.

        Poll `GET /jobs/{id}` for its progress and, once `status` is `done`, its `result` (what `POST /detect`
        returns). The upload is checked before it is queued: a file `POST /detect` refuses is refused here with
        the same status. Jobs run one at a time, and never hold up a photo sent to `POST /detect`.
        """
        data, name, video = await read_upload_form(form)
        try:
            model = service.resolve(form.model)
        except UnknownServedModelError as exc:
            raise HTTPException(422, str(exc)) from exc
        settings = form.video_settings() if video else form.photo_settings()
        try:
            job = jobs.submit(data, name, video=video, **(settings | {"model": model}))
        except QueueFullError as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from exc
        return JSONResponse({"id": job.id}, status_code=202)

    @router.get(
        "/jobs/{job_id}",
        response_model=JobState,
        responses={404: {"model": ErrorDetail, "description": "No such job, or it has expired"}},
        tags=["jobs"],
    )
    def get_job(job_id: str) -> JSONResponse:
        """A job's status (queued, running, done, error, cancelled), progress in frames and faces, and its
        `result` once done or its `error` message. Ended jobs are kept for an hour."""
        return JSONResponse(_job_or_404(jobs.get(job_id), job_id).to_json())

    @router.delete(
        "/jobs/{job_id}",
        response_model=JobState,
        responses={404: {"model": ErrorDetail, "description": "No such job, or it has expired"}},
        tags=["jobs"],
    )
    def cancel_job(job_id: str) -> JSONResponse:
        """Cancel a job: a queued one never runs, a running video stops after the frame it is on (its status
        turns `cancelled` then). A job that has already ended is left as it is."""
        return JSONResponse(_job_or_404(jobs.cancel(job_id), job_id).to_json())

    return router


def install_error_handlers(app: FastAPI) -> None:
    """Plain `{"detail": message}` for every error, and no stack trace ever reaches a client."""

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": "internal server error; the server log has the details"}, status_code=500
        )

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
