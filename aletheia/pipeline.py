"""Faces + classifier -> typed results. The one way through for the API, CLI, web app, REST API and evaluation.

Models load once, in the constructor. All faces of an image (and, in `predict_many`, of several images) go through
the classifier in one batch.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aletheia import tta as augment
from aletheia.caveats import face_caveats, image_caveats, rule_caveats, unstable_caveat
from aletheia.faces.extract import FaceDetector, FacePolicy, crop_face
from aletheia.io import ImageInput, InputError, load_image
from aletheia.models.config import ModelConfig
from aletheia.models.inference import open_classifier
from aletheia.models.preprocessing import check_face_policy
from aletheia.models.spec import ModelSpec, resolve_model_arguments
from aletheia.overlap import default_workers, ordered_map
from aletheia.provenance import InputFacts, Provenance, input_facts
from aletheia.results import DEFAULT_MAX_SPREAD, DecisionRule, FaceResult, ImageResult


@dataclass
class _Pending:
    """An image whose faces are detected and cropped but not yet classified."""

    result: ImageResult
    crops: np.ndarray  # (k, size, size, 3)


class Classified(NamedTuple):
    """The classifier's answer for n face crops, averaged over the test-time augmented views in logit space."""

    logits: np.ndarray  # (n,) overall fake logit, divided by the calibration temperature
    kind_logits: np.ndarray  # (n, len(kinds)): per kind of fake, likewise; (n, 0) for one-output models
    spread: np.ndarray | None  # (n,) largest minus smallest fake probability across views; None without views
    attention: np.ndarray | None  # (n, h, w) of the original view, when asked for and the model has it


class DeepfakeDetectorPipeline:
    """Detect faces, crop them as training does, and score each one's probability of being fake.

    `model_name` is any model spec (aletheia.models.spec): a bundled model's name ("aletheia-lite2", the default),
    a published-weights name, or a file (.pth, or .onnx with its .onnx.json sidecar); `model_spec` says what it
    resolved to. `model_checkpoint` names a weights file whose architecture `model_name` then names (otherwise it
    is read from the file). `backend` runs the classifier in
    `torch`, `onnx` (ONNX Runtime) or `openvino`; `auto` picks ONNX Runtime on a CPU and torch on a GPU. On a CPU
    the bundled model runs from its shipped ONNX file and nothing imports torch; a user's .pth needs torch to load.
    `face_policy` defaults to the one the model was trained with (asking for another is allowed, with a warning).
    `tta` scores each face as several views averaged in logit space (`aletheia.tta`: "mirror" by default,
    "none", or "mirror_zoom"); a face whose views disagree by more than the model's spread limit is inconclusive.
    """

    def __init__(
        self,
        model_name: str | Path | ModelSpec | None = None,
        model_checkpoint: str | Path | None = None,
        device: str = "cpu",
        *,
        threshold: float | None = None,
        face_policy: FacePolicy | None = None,
        batch_size: int = 32,
        min_face_size: int | None = None,
        backend: str = "auto",
        tta: str = augment.DEFAULT_TTA,
    ) -> None:
        self.tta = augment.check_mode(tta)
        self.device = device
        # ONNX Runtime is 2.5-7x faster than eager torch on a CPU, with the same scores (tests/models/test_runtime.py).
        self.model_spec = resolve_model_arguments(model_name, model_checkpoint)
        self.classifier, self.config, self.model_label = open_classifier(
            self.model_spec, None, device, backend
        )
        self.backend = self.classifier.backend
        self.threshold = float(self.config.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.face_policy = check_face_policy(self.config, face_policy)
        self.preprocessing = replace(self.config, face_policy=self.face_policy).preprocessing
        self.batch_size = max(1, int(batch_size))
        self.detector = FaceDetector(min_face_size=min_face_size, device=device)
        self.rule = DecisionRule(
            self.config.threshold, self.config.band, self.config.max_spread or DEFAULT_MAX_SPREAD
        )

    @property
    def model_sha256(self) -> str | None:
        """SHA-256 of the weights file, hashed once when the model loaded."""
        return self.config.weights_sha256

    # -- public API ---------------------------------------------------------------------------------------------

    def predict(
        self,
        image: ImageInput,
        *,
        assume_face: bool = False,
        return_attention: bool = False,
        path: str | None = None,
        facts: InputFacts | None = None,
    ) -> ImageResult:
        """Score every face in one image (a path, bytes, PIL image or RGB array).

        `facts` (its file's hash and JPEG quality) are read from `image` unless given: a caller that decoded the
        file itself passes them. Raises `InputError` for an unreadable image; `predict_many` turns that into an
        error result instead.
        """
        name = path if path is not None else (str(image) if isinstance(image, (str, Path)) else "<image>")
        # An array's only fact is the hash of its pixels (6 MB for 1080p): hashed beside the face search, which
        # leaves a core idle part of the time (hashlib lets go of the GIL).
        hashing = None
        if facts is None and isinstance(image, np.ndarray):
            hashing = _background().submit(input_facts, image)
        elif facts is None:
            facts = input_facts(image)
        pending = self._detect(load_image(image), name, assume_face, facts)
        self._classify([pending], return_attention=return_attention)
        if hashing is not None:
            pending.result.provenance = self.provenance(hashing.result())
        return pending.result

    def predict_many(
        self, sources: Iterable[str | Path], *, assume_face: bool = False, workers: int | None = None
    ) -> Iterator[ImageResult]:
        """Score many image files, yielding one result per input in order; a bad file yields an error result.

        Photos are decoded and searched for faces by `workers` threads (default: one per CPU, at most 4; 0: all in
        this thread) while this thread classifies the faces found (aletheia.overlap); the scores do not depend on
        it. benchmarks/torch_free_detect.py measures it against workers=0.
        """

        def detect(source: str | Path) -> _Pending:
            facts = input_facts(source)
            try:
                return self._detect(load_image(source), str(source), assume_face, facts)
            except InputError as exc:
                error = self._empty_result(str(source), error=str(exc), facts=facts)
                return _Pending(error, _no_crops(self.config))

        workers = default_workers() if workers is None else workers
        # Photos in flight are decoded one at a time per thread; found faces (crops only) wait for a whole batch.
        detected = (
            ordered_map(detect, sources, workers, ahead=workers + self.batch_size)
            if workers
            else map(detect, sources)
        )
        waiting: list[_Pending] = []
        waiting_faces = 0
        for pending in detected:
            waiting.append(pending)
            waiting_faces += len(pending.crops)
            if waiting_faces >= self.batch_size:
                self._classify(waiting)
                yield from (p.result for p in waiting)
                waiting, waiting_faces = [], 0
        if waiting:
            self._classify(waiting)
            yield from (p.result for p in waiting)

    def crop_face(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """One face cut as this model's classifier expects it: face policy, input size and the model's crop margin."""
        return self.preprocessing.crop(image, box)

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        """Fake probabilities for face crops (n, size, size, 3) RGB uint8, already cut with `crop_face`."""
        return _sigmoid(self.logits(crops))

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """Classifier logits (overall fake) for face crops, divided by the model's calibration temperature and
        averaged over the test-time augmented views."""
        return self.classify(crops).logits

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of fake the model scores separately ("manipulated", "generated"), or () for one-output models."""
        return self.config.kinds

    def logits_by_kind(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(overall logits (n,), per-kind logits (n, len(kinds))) for face crops from one pass, both divided by the
        calibration temperature; the second is (n, 0) for one-output models."""
        overall, per_kind, _, _ = self.classify(crops)
        return overall, per_kind

    def classify(
        self, crops: np.ndarray, return_attention: bool = False, tta: str | None = None
    ) -> Classified:
        """The classifier's answer for face crops: every face and its augmented views in one pass per batch.
        `tta` overrides the pipeline's test-time augmentation (videos score each face once: aletheia.tta)."""
        mode = self.tta if tta is None else augment.check_mode(tta)
        views = augment.views_of(mode)
        logits, maps, spreads = [], [], []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size]
            batch = self.preprocessing.normalise(augment.expand(chunk, mode))
            batch_logits, batch_maps = self.classifier.infer(
                batch, with_attention=return_attention and self.config.has_attention
            )
            if batch_maps is not None:
                maps.append(batch_maps[:, 0].astype(np.float32)[::views])  # the original view's
            batch_logits = (
                batch_logits.astype(np.float32).reshape(len(chunk), views, -1) / self.config.temperature
            )
            probabilities = _sigmoid(batch_logits[:, :, 0])
            spreads.append(probabilities.max(axis=1) - probabilities.min(axis=1))
            logits.append(batch_logits.mean(axis=1))
        attention = np.concatenate(maps) if maps else None
        if not logits:
            return Classified(np.zeros(0), np.zeros((0, len(self.kinds))), None, attention)
        joined = np.concatenate(logits)
        spread = np.concatenate(spreads) if views > 1 else None
        return Classified(joined[:, 0], joined[:, 1:], spread, attention)

    def with_tta(self, mode: str | None) -> DeepfakeDetectorPipeline:
        """This pipeline with another test-time augmentation (None: its own), sharing its loaded models."""
        if mode is None or mode == self.tta:
            return self
        twin = copy.copy(self)
        twin.tta = augment.check_mode(mode)
        return twin

    def provenance(self, facts: InputFacts | None) -> Provenance:
        return Provenance.now(self.model_sha256, None if facts is None else facts.sha256)

    def error_result(self, path: str, error: str) -> ImageResult:
        """The result of an input that could not be read (its hash when its bytes could be)."""
        return self._empty_result(path, error=error, facts=input_facts(path))

    # -- the steps ----------------------------------------------------------------------------------------------

    def _empty_result(
        self, path: str, error: str | None = None, facts: InputFacts | None = None
    ) -> ImageResult:
        return ImageResult(
            path=path, threshold=self.threshold, model=self.model_label, error=error, rule=self.rule,
            tta=self.tta, provenance=self.provenance(facts),
        )  # fmt: skip

    def _detect(
        self, image: np.ndarray, path: str, assume_face: bool, facts: InputFacts | None = None
    ) -> _Pending:
        height, width = image.shape[:2]
        result = self._empty_result(path, facts=facts)
        result.width, result.height = width, height
        result.warnings = image_caveats(width, height, facts.jpeg_quality if facts else None)
        result.warnings += rule_caveats(self.rule.default_band, self.tta)
        size = self.config.input_size
        if assume_face:
            box = np.array([0, 0, width, height], dtype=np.float32)
            crop = crop_face(image, box, self.face_policy, size, margin=0.0)
            result.faces.append(
                FaceResult(
                    box=box,
                    keypoints=np.zeros((0, 2)),
                    detection_score=1.0,
                    score=np.nan,
                    warnings=face_caveats(box, crop, width, height, whole_image=True),
                )  # fmt: skip
            )
            return _Pending(result, crop[None])
        faces = self.detector.detect(image)
        crops = [self.crop_face(image, face.box) for face in faces]
        for face, crop in zip(faces, crops, strict=True):
            result.faces.append(
                FaceResult(
                    box=face.box,
                    keypoints=face.keypoints,
                    detection_score=face.detection_score,
                    score=np.nan,
                    warnings=face_caveats(face.box, crop, width, height),
                )  # fmt: skip
            )
        return _Pending(result, np.stack(crops) if crops else _no_crops(self.config))

    def _classify(self, pending: list[_Pending], return_attention: bool = False) -> None:
        """Classify the crops of several images together and write the scores into their results."""
        counts = [len(p.crops) for p in pending]
        if sum(counts) == 0:
            return
        all_crops = np.concatenate([p.crops for p in pending])
        logits, kind_logits, spread, attention = self.classify(all_crops, return_attention)
        scores, kind_scores = _sigmoid(logits), _sigmoid(kind_logits)
        start = 0
        for item, count in zip(pending, counts, strict=True):
            for i, face in enumerate(item.result.faces):
                face.score = float(scores[start + i])
                face.scores = dict(zip(self.kinds, map(float, kind_scores[start + i]), strict=True))
                face.crop = item.crops[i]
                if spread is not None:
                    face.spread = float(spread[start + i])
                    if face.spread > self.rule.max_spread:
                        face.warnings.append(unstable_caveat(face.spread, self.rule.max_spread))
                if attention is not None:
                    face.attention = attention[start + i]
            start += count


@functools.cache
def _background() -> ThreadPoolExecutor:
    """One thread for small side work of `predict` (hashing an input) while the main thread searches for faces."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="aletheia-side")


def _no_crops(config: ModelConfig) -> np.ndarray:
    return np.zeros((0, config.input_size, config.input_size, 3), dtype=np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
