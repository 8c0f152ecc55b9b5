"""Faces + classifier -> typed results. The one way through for the API, CLI, web app, REST API and evaluation.

Models load once, in the constructor. All faces of an image (and, in `predict_many`, of several images) go through
the classifier in one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aletheia.faces.extract import FaceDetector, FacePolicy, crop_face
from aletheia.io import ImageInput, InputError, load_image
from aletheia.models.config import ModelConfig
from aletheia.models.inference import open_classifier
from aletheia.models.preprocessing import check_face_policy
from aletheia.overlap import default_workers, ordered_map
from aletheia.results import FaceResult, ImageResult


@dataclass
class _Pending:
    """An image whose faces are detected and cropped but not yet classified."""

    result: ImageResult
    crops: np.ndarray  # (k, size, size, 3)


class DeepfakeDetectorPipeline:
    """Detect faces, crop them as training does, and score each one's probability of being fake.

    `model_name` is a registered architecture or a published-weights name; `model_checkpoint` a weights file
    (its architecture is read from its keys unless `model_name` names it). `backend` runs the classifier in
    `torch`, `onnx` (ONNX Runtime) or `openvino`; `auto` picks ONNX Runtime on a CPU and torch on a GPU. On a CPU
    the bundled model runs from its shipped ONNX file and nothing imports torch; a user's .pth needs torch to load.
    `face_policy` defaults to the one the model was trained with (asking for another is allowed, with a warning).
    """

    def __init__(
        self,
        model_name: str | None = None,
        model_checkpoint: str | Path | None = None,
        device: str = "cpu",
        *,
        threshold: float | None = None,
        face_policy: FacePolicy | None = None,
        batch_size: int = 32,
        min_face_size: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.device = device
        # ONNX Runtime is 2.5-7x faster than eager torch on a CPU, with the same scores (tests/models/test_runtime.py).
        self.classifier, self.config, self.model_label = open_classifier(
            model_name, model_checkpoint, device, backend
        )
        self.backend = self.classifier.backend
        self.threshold = float(self.config.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        self.face_policy = check_face_policy(self.config, face_policy)
        self.preprocessing = replace(self.config, face_policy=self.face_policy).preprocessing
        self.batch_size = max(1, int(batch_size))
        self.detector = FaceDetector(min_face_size=min_face_size, device=device)

    # -- public API ---------------------------------------------------------------------------------------------

    def predict(
        self,
        image: ImageInput,
        *,
        assume_face: bool = False,
        return_attention: bool = False,
        path: str | None = None,
    ) -> ImageResult:
        """Score every face in one image (a path, bytes, PIL image or RGB array).

        Raises `InputError` for an unreadable image; `predict_many` turns that into an error result instead.
        """
        name = path if path is not None else (str(image) if isinstance(image, (str, Path)) else "<image>")
        pending = self._detect(load_image(image), name, assume_face)
        self._classify([pending], return_attention=return_attention)
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
            try:
                return self._detect(load_image(source), str(source), assume_face)
            except InputError as exc:
                return _Pending(self._empty_result(str(source), error=str(exc)), _no_crops(self.config))

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
        """Classifier logits (overall fake) for face crops, divided by the model's calibration temperature."""
        return self._logits(crops)[0]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of fake the model scores separately ("manipulated", "generated"), or () for one-output models."""
        return self.config.kinds

    def logits_by_kind(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(overall logits (n,), per-kind logits (n, len(kinds))) for face crops from one pass, both divided by the
        calibration temperature; the second is (n, 0) for one-output models."""
        overall, per_kind, _ = self._logits(crops)
        return overall, per_kind

    # -- the steps ----------------------------------------------------------------------------------------------

    def _empty_result(self, path: str, error: str | None = None) -> ImageResult:
        return ImageResult(path=path, threshold=self.threshold, model=self.model_label, error=error)

    def _detect(self, image: np.ndarray, path: str, assume_face: bool) -> _Pending:
        height, width = image.shape[:2]
        result = self._empty_result(path)
        result.width, result.height = width, height
        size = self.config.input_size
        if assume_face:
            box = np.array([0, 0, width, height], dtype=np.float32)
            crop = crop_face(image, box, self.face_policy, size, margin=0.0)
            result.faces.append(
                FaceResult(box=box, keypoints=np.zeros((0, 2)), detection_score=1.0, score=np.nan)
            )
            return _Pending(result, crop[None])
        faces = self.detector.detect(image)
        crops = [self.crop_face(image, face.box) for face in faces]
        for face in faces:
            result.faces.append(
                FaceResult(
                    box=face.box, keypoints=face.keypoints, detection_score=face.detection_score, score=np.nan
                )
            )
        return _Pending(result, np.stack(crops) if crops else _no_crops(self.config))

    def _classify(self, pending: list[_Pending], return_attention: bool = False) -> None:
        """Classify the crops of several images together and write the scores into their results."""
        counts = [len(p.crops) for p in pending]
        if sum(counts) == 0:
            return
        all_crops = np.concatenate([p.crops for p in pending])
        logits, kind_logits, attention = self._logits(all_crops, return_attention)
        scores, kind_scores = _sigmoid(logits), _sigmoid(kind_logits)
        start = 0
        for item, count in zip(pending, counts, strict=True):
            for i, face in enumerate(item.result.faces):
                face.score = float(scores[start + i])
                face.scores = dict(zip(self.kinds, map(float, kind_scores[start + i]), strict=True))
                face.crop = item.crops[i]
                if attention is not None:
                    face.attention = attention[start + i]
            start += count

    def _logits(
        self, crops: np.ndarray, return_attention: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(overall logits (n,), per-kind logits (n, len(kinds)), attention maps or None), all from one pass."""
        logits, kind_logits, maps = [], [], []
        for start in range(0, len(crops), self.batch_size):
            batch = self.preprocessing.normalise(crops[start : start + self.batch_size])
            batch_logits, batch_maps = self.classifier.infer(
                batch, with_attention=return_attention and self.config.has_attention
            )
            if batch_maps is not None:
                maps.append(batch_maps[:, 0].astype(np.float32))
            batch_logits = batch_logits.astype(np.float32).reshape(len(batch), -1) / self.config.temperature
            logits.append(batch_logits[:, 0])
            kind_logits.append(batch_logits[:, 1:])
        attention = np.concatenate(maps) if maps else None
        if not logits:
            return np.zeros(0), np.zeros((0, len(self.kinds))), attention
        return np.concatenate(logits), np.concatenate(kind_logits), attention


def _no_crops(config: ModelConfig) -> np.ndarray:
    return np.zeros((0, config.input_size, config.input_size, 3), dtype=np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
