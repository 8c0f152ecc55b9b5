"""The models a server holds and the one way the web app and the REST API score an upload with them.

Pipelines load once, at start. Each request brings its own threshold: results are relabelled per request and the
shared pipelines are never mutated, so concurrent users with different thresholds cannot disturb each other.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aletheia.io import InputError, load_image
from aletheia.pipeline import DeepfakeDetectorPipeline
from aletheia.results import ImageResult


class UnknownServedModelError(LookupError):
    """A request named a model this server does not hold; the message lists those it does."""


@dataclass
class Detection:
    """A scored upload: the decoded image (for drawing) and its result at the request's threshold."""

    image: np.ndarray
    result: ImageResult


def with_threshold(result: ImageResult, threshold: float) -> ImageResult:
    """The same result judged at another threshold (labels derive from it); the original is left untouched."""
    return dataclasses.replace(result, threshold=float(threshold))


def load_pipelines(
    specs: Sequence[str], *, arch: str | None = None, device: str = "cpu", **pipeline_kwargs: Any
) -> dict[str, DeepfakeDetectorPipeline]:
    """Load each model spec (a published weights name or a checkpoint file) once, keyed by its result label.

    No specs: the bundled default model. `arch` names the architecture of checkpoint files whose keys do not tell
    it. Errors from the loader (CheckpointError, UnknownModelError, ValueError) propagate with their messages.
    """
    from aletheia.models.loader import is_checkpoint_path

    pipelines: dict[str, DeepfakeDetectorPipeline] = {}
    for spec in specs or [None]:
        if spec is None:
            pipeline = DeepfakeDetectorPipeline(None, None, device, **pipeline_kwargs)
        elif is_checkpoint_path(spec):
            pipeline = DeepfakeDetectorPipeline(arch, spec, device, **pipeline_kwargs)
        else:
            pipeline = DeepfakeDetectorPipeline(spec, None, device, **pipeline_kwargs)
        name, n = pipeline.model_label, 2
        while name in pipelines:  # two checkpoints with the same file name stay selectable
            name, n = f"{pipeline.model_label} ({n})", n + 1
        pipelines[name] = pipeline
    return pipelines


class DetectionService:
    """Named pipelines (the first is the default), each guarded by its own lock.

    The pipelines make no thread-safety promise, and the web app's queue and the REST API's thread pool call in
    from different threads, so inference on one model is serialised; different models may run side by side.
    """

    def __init__(self, pipelines: Mapping[str, DeepfakeDetectorPipeline]) -> None:
        if not pipelines:
            raise ValueError("a server needs at least one model")
        self.pipelines = dict(pipelines)
        self._locks = {name: threading.Lock() for name in self.pipelines}

    @property
    def default_model(self) -> str:
        return next(iter(self.pipelines))

    @property
    def model_names(self) -> list[str]:
        return list(self.pipelines)

    def resolve(self, model: str | None) -> str:
        """The name of a held model (None: the default); raises UnknownServedModelError otherwise."""
        if model is None or model == "":
            return self.default_model
        if model not in self.pipelines:
            raise UnknownServedModelError(
                f"unknown model {model!r}; this server has: {', '.join(self.pipelines)}"
            )
        return model

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
    ) -> Detection:
        """Decode and score one uploaded file; `name` (the upload's filename) becomes the result's `path`.

        Raises InputError, with `name` in its message, for a file that is not a usable image.
        """
        key = self.resolve(model)
        pipeline = self.pipelines[key]
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        try:
            image = load_image(data)
        except InputError as exc:
            raise InputError(_rename(str(exc), f"<{len(data)} bytes>", name)) from exc
        with self._locks[key]:
            result = pipeline.predict(
                image, assume_face=assume_face, return_attention=return_attention, path=name
            )
        return Detection(
            image, with_threshold(result, pipeline.threshold if threshold is None else threshold)
        )


def upload_name(filename: str | Path | None) -> str:
    """The base name of an upload as the client called it; never a server-side temp path."""
    base = Path(str(filename or "")).name
    return base or "upload"


def _rename(message: str, described: str, name: str) -> str:
    # io describes bytes as "<N bytes>"; the user knows the file by its name.
    return name + message[len(described) :] if message.startswith(described) else f"{name}: {message}"
