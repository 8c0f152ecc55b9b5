"""Long work off the request path: an upload becomes a job that a worker of its own scores while the client polls.

`POST /api/v1/jobs` (and the web app, for videos) submit; the job's upload is saved to this queue's folder and
deleted once the job ends. A bounded number of jobs wait or run at once (more are refused, the caller answers 503),
and ended jobs are kept for a limited time, then forgotten. A running video checks for cancellation after every
sampled frame; a photo, done in one step, is cancelled only before it starts. The model's gate (gate.py) lets
photo requests go between a video's frames, so a job never holds up a photo.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aletheia.io import InputError
from aletheia.serving.service import (
    Detection,
    DetectionService,
    UnknownServedModelError,
    VideoDetection,
)

# Jobs run one at a time: the two CPU cores are the model's anyway, and a second video would only halve the speed
# of the first.
JOB_WORKERS = 1
# Queued or running at once; a client sending more is told to try later.
MAX_PENDING_JOBS = 8
# An ended job (done, error, cancelled) is kept this long for its client to fetch, then forgotten.
JOB_TTL_SECONDS = 3600
# ... and at most this many ended jobs are kept (the oldest are forgotten first).
MAX_KEPT_JOBS = 256

Status = Literal["queued", "running", "done", "error", "cancelled"]
ENDED: tuple[Status, ...] = ("done", "error", "cancelled")


class QueueFullError(RuntimeError):
    """More jobs are queued or running than the queue takes; the message says how many."""


class JobCancelled(Exception):
    """Raised inside a running video when its job has been cancelled."""


def _utc(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One upload's work. `settings` are the keyword arguments of DetectionService.detect / detect_video."""

    id: str
    name: str
    kind: Literal["image", "video"]
    settings: dict[str, Any]
    upload: Path
    owner: str | None = None
    status: Status = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    frames_done: int | None = None
    frames_total: int | None = None
    faces: int | None = None
    outcome: Detection | VideoDetection | None = None
    error: str | None = None
    failure: Exception | None = field(default=None, repr=False)  # what went wrong, for in-process callers
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "kind": self.kind,
            "name": self.name,
            "progress": {
                "frames_done": self.frames_done,
                "frames_total": self.frames_total,
                "faces": self.faces,
            },
            "created": _utc(self.created),
            "started": _utc(self.started),
            "ended": _utc(self.ended),
            "result": self.outcome.result.to_json() if self.status == "done" and self.outcome else None,
            "error": self.error,
        }


class JobQueue:
    """Jobs for one DetectionService, run by `workers` threads of their own, uploads under `folder`.

    `folder` (default: a new temporary folder) is removed when the queue is closed or garbage collected.
    """

    def __init__(
        self,
        service: DetectionService,
        *,
        workers: int = JOB_WORKERS,
        max_pending: int = MAX_PENDING_JOBS,
        ttl: float = JOB_TTL_SECONDS,
        max_kept: int = MAX_KEPT_JOBS,
        folder: str | Path | None = None,
    ) -> None:
        self.service = service
        self.max_pending, self.ttl, self.max_kept = max_pending, ttl, max_kept
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="aletheia-jobs-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(workers, thread_name_prefix="aletheia-job")
        self._cleanup = weakref.finalize(self, _remove_all, self._workers, self.folder)

    def submit(
        self, data: bytes, name: str, *, video: bool, owner: str | None = None, **settings: Any
    ) -> Job:
        """Save the upload and queue its job; QueueFullError when `max_pending` jobs are already waiting or running."""
        with self._lock:
            self._forget_old()
            pending = sum(job.status not in ENDED for job in self._jobs.values())
            if pending >= self.max_pending:
                raise QueueFullError(
                    f"this server already has {pending} jobs queued or running, its limit; try again later"
                )
            job_id = secrets.token_urlsafe(16)  # unguessable: a job id is all it takes to read or cancel one
            upload = self.folder / (job_id + _safe_suffix(name))
            upload.write_bytes(data)
            job = Job(job_id, name, "video" if video else "image", settings, upload, owner=owner)
            self._jobs[job_id] = job
        self._workers.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            self._forget_old()
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop: a queued one never runs, a running video stops after its current frame."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status in ENDED:
                return job
            job.cancel_requested.set()
            if job.status == "queued":
                self._end(job, "cancelled")
            return job

    def cancel_owned(self, owner: str) -> int:
        """Cancel every job of `owner` that has not ended (the web app: a session's Cancel button)."""
        with self._lock:
            owned = [job.id for job in self._jobs.values() if job.owner == owner and job.status not in ENDED]
        for job_id in owned:
            self.cancel(job_id)
        return len(owned)

    def wait(self, job: Job, poll: float = 0.2, on_progress: Callable[[Job], None] | None = None) -> Job:
        """Block until `job` ends, calling `on_progress` at every poll."""
        while job.status not in ENDED:
            if on_progress is not None:
                on_progress(job)
            time.sleep(poll)
        return job

    def close(self) -> None:
        """Cancel everything, stop the workers and remove the uploads folder."""
        with self._lock:
            ids = list(self._jobs)
        for job_id in ids:
            self.cancel(job_id)
        self._cleanup()

    # -- the worker's side ------------------------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.status != "queued":  # cancelled while it waited
                return
            job.status, job.started = "running", time.time()
        try:
            outcome = self._score(job)
        except JobCancelled:
            self._finish(job, "cancelled")
        except (InputError, UnknownServedModelError, ValueError) as exc:
            self._finish(job, "error", error=str(exc), failure=exc)
        except Exception:  # noqa: BLE001 - a job must end, whatever happens; the log has the trace
            import logging

            logging.getLogger("aletheia.serving").exception("job %s failed", job.id)
            self._finish(job, "error", error="internal server error; the server log has the details")
        else:
            self._finish(job, "cancelled" if job.cancel_requested.is_set() else "done", outcome=outcome)

    def _score(self, job: Job) -> Detection | VideoDetection:
        if job.kind == "image":
            detection = self.service.detect(job.upload.read_bytes(), job.name, **job.settings)
            job.faces = len(detection.result.faces)
            return detection

        def on_frame(done: int, total: int, faces: int) -> None:
            job.frames_done, job.frames_total, job.faces = done, total, faces
            if job.cancel_requested.is_set():
                raise JobCancelled

        job.frames_done = 0
        return self.service.detect_video(str(job.upload), job.name, on_frame=on_frame, **job.settings)

    def _finish(
        self,
        job: Job,
        status: Status,
        *,
        outcome: Any = None,
        error: str | None = None,
        failure: Exception | None = None,
    ) -> None:
        with self._lock:
            job.outcome, job.error, job.failure = outcome, error, failure
            self._end(job, status)

    def _end(self, job: Job, status: Status) -> None:
        job.status, job.ended = status, time.time()
        job.upload.unlink(missing_ok=True)

    def _forget_old(self) -> None:
        """Drop ended jobs past their time, and the oldest beyond `max_kept` (called with the lock held)."""
        now = time.time()
        ended = sorted((j for j in self._jobs.values() if j.status in ENDED), key=lambda j: j.ended or 0.0)
        for number, job in enumerate(ended):
            if now - (job.ended or now) > self.ttl or len(ended) - number > self.max_kept:
                del self._jobs[job.id]


def _safe_suffix(name: str) -> str:
    """The upload's extension when it is a plain one (the video reader may use it), else none."""
    suffix = Path(name).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _remove_all(workers: ThreadPoolExecutor, folder: Path) -> None:
    workers.shutdown(wait=False, cancel_futures=True)
    shutil.rmtree(folder, ignore_errors=True)
