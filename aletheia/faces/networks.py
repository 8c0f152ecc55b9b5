"""The two BlazeFace networks behind one interface: shipped weights, torch or ONNX Runtime, any input size.

Both are fully convolutional, so they run on whole images of any size whose sides are multiples of
`NetworkSpec.size_multiple`: anchors are then laid on the larger grid, one cell per output pixel, exactly where a
tile of the trained input size would put them. Decoded detections are in input pixels (MediaPipe's fixed-size
anchors scale offsets by the input side, so raw outputs already are pixel offsets).

On the CPU the networks run on ONNX Runtime by default (`backend="auto"`): exported once per weights (dynamic batch,
height and width) into `$ALETHEIA_CACHE/onnx` (or `~/.cache/aletheia/onnx`), matching torch to float rounding.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from aletheia.faces import blazeface, full_range
from aletheia.faces.blazeface import NUM_KEYPOINTS, decode, weighted_nms

Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
ONNX_OPSET = 17
# Bump when the exported graph changes for the same weights, so stale cache files are not reused.
_EXPORT_VERSION = 2  # 2: dynamic height and width


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    input_size: int  # the square side it was trained on
    size_multiple: int  # input sides must be multiples of this
    # (stride, anchors per cell) of each output map, in output order
    anchor_layout: tuple[tuple[int, int], ...]
    weights: Path
    build: Callable[[], nn.Module]


SHORT_RANGE = NetworkSpec(
    "short-range",
    blazeface.INPUT_SIZE,
    16,
    blazeface.ANCHOR_LAYOUT,
    blazeface.WEIGHTS_PATH,
    blazeface.BlazeFace,
)
FULL_RANGE = NetworkSpec(
    "full-range",
    full_range.INPUT_SIZE,
    full_range.SIZE_MULTIPLE,
    ((full_range.STRIDE, 1),),
    full_range.WEIGHTS_PATH,
    full_range.BlazeFaceFullRange,
)


@lru_cache(maxsize=64)
def grid_anchors(layout: tuple[tuple[int, int], ...], height: int, width: int) -> np.ndarray:
    """Anchors (x_centre, y_centre, 1, 1) in input pixels for an input of this size, in the networks' output order.

    For the trained size these are MediaPipe's SsdAnchorsCalculator anchors times the input side.
    """
    parts = []
    for stride, per_cell in layout:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) + 0.5) * stride
        parts.append(np.repeat(centres, per_cell, axis=0))
    centres = np.concatenate(parts).astype(np.float32)
    anchors = np.concatenate([centres, np.ones_like(centres)], axis=1)
    anchors.setflags(write=False)
    return anchors


@lru_cache(maxsize=2)
def shipped_state_dict(spec: NetworkSpec) -> dict[str, torch.Tensor]:
    return torch.load(spec.weights, map_location="cpu", weights_only=True)


def shipped_model(spec: NetworkSpec) -> nn.Module:
    model = spec.build()
    model.load_state_dict(shipped_state_dict(spec))
    return model.eval()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1], as MediaPipe feeds it."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class _Uint8Input(nn.Module):
    """A network taking the detector's own input, uint8 N x H x W x 3, so ONNX does the normalisation too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(normalise(images))


def onnx_cache_dir() -> Path:
    """``$ALETHEIA_CACHE/onnx`` if set, else ``~/.cache/aletheia/onnx`` (the classifier's exports live there too)."""
    env = os.environ.get("ALETHEIA_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "aletheia") / "onnx"


@lru_cache(maxsize=4)
def onnx_path(spec: NetworkSpec) -> Path:
    """The shipped network as ONNX (uint8 NHWC in; dynamic batch, height, width), exported at most once per weights.

    Named by a SHA-256 of the weights; written atomically, so concurrent processes at worst export twice, never
    read half a file.
    """
    digest = hashlib.sha256(f"blazeface-{spec.name}|v{_EXPORT_VERSION}|opset{ONNX_OPSET}".encode())
    for key, tensor in shipped_state_dict(spec).items():
        digest.update(f"|{key}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    path = onnx_cache_dir() / f"blazeface-{spec.name}-{digest.hexdigest()}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # Batch 2 and a non-square size: tracing at 1 or a square risks a dimension folded into a constant.
    example = torch.zeros(2, spec.input_size, spec.input_size + 2 * spec.size_multiple, 3, dtype=torch.uint8)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated and chatty
            torch.onnx.export(
                _Uint8Input(shipped_model(spec)),
                (example,),
                tmp_name,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["images"],
                output_names=["regressors", "classificators"],
                dynamic_axes={
                    "images": {0: "batch", 1: "height", 2: "width"},
                    "regressors": {0: "batch", 1: "anchors"},
                    "classificators": {0: "batch", 1: "anchors"},
                },
            )
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


class BlazeFaceNetwork:
    """One BlazeFace network on uint8 RGB batches N x H x W x 3 (sides multiples of `spec.size_multiple`).

    `backend`: "torch", "onnx" (ONNX Runtime, CPU only) or "auto": ONNX on the CPU, torch on other devices.
    """

    def __init__(
        self, spec: NetworkSpec, device: str | torch.device = "cpu", backend: Backend = "auto"
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown BlazeFace backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.spec = spec
        self.device = torch.device(device)
        if backend == "auto":
            backend = "onnx" if self.device.type == "cpu" else "torch"
        if backend == "onnx" and self.device.type != "cpu":
            raise ValueError(f"the onnx BlazeFace backend runs on the CPU only, not {self.device}")
        self.backend: str = backend
        self.model: nn.Module | None = None
        self._session = None
        if backend == "torch":
            self.model = shipped_model(spec).to(self.device)
        else:
            from aletheia.onnxrt import cpu_session

            self._session = cpu_session(onnx_path(spec))

    def _check(self, images: np.ndarray) -> np.ndarray:
        multiple = self.spec.size_multiple
        if (
            images.dtype != np.uint8
            or images.ndim != 4
            or images.shape[3] != 3
            or images.shape[1] % multiple
            or images.shape[2] % multiple
            or not images.shape[1]
            or not images.shape[2]
        ):
            raise ValueError(
                f"expected uint8 RGB images N x H x W x 3 with H and W multiples of {multiple}, "
                f"got {images.dtype} {images.shape}"
            )
        return np.ascontiguousarray(images)

    def raw_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's raw (regressors [N, anchors, 16], classificators [N, anchors, 1]) as float32 numpy."""
        images = self._check(images)
        if not len(images):  # both backends' reshapes fail on an empty batch (-1 of 0 elements is ambiguous)
            count = len(grid_anchors(self.spec.anchor_layout, *images.shape[1:3]))
            return np.zeros((0, count, 16), np.float32), np.zeros((0, count, 1), np.float32)
        if self._session is not None:
            regressors, classificators = self._session.run(None, {"images": images})
            return regressors, classificators
        with torch.inference_mode():
            regressors, classificators = self.model(normalise(torch.from_numpy(images).to(self.device)))
        return regressors.cpu().numpy(), classificators.cpu().numpy()

    def candidates(self, images: np.ndarray, score_threshold: float) -> list[np.ndarray]:
        """Per image, every anchor's detection scoring at least `score_threshold` (K, 17), in input pixels, before
        NMS: [x0, y0, x1, y1, 6 keypoints (x, y), score]. Boxes decoded with no area are dropped (as MediaPipe)."""
        regressors, classificators = self.raw_outputs(images)
        anchors = grid_anchors(self.spec.anchor_layout, *images.shape[1:3])
        # Threshold the logits first: only the few anchors on faces are decoded.
        logit = np.log(score_threshold / (1 - score_threshold)) if 0 < score_threshold < 1 else -np.inf
        found = []
        for reg, cls in zip(regressors, classificators, strict=True):
            keep = np.flatnonzero(cls[:, 0] >= logit)
            dets = decode(reg[keep], cls[keep], anchors[keep], scale=1.0)
            dets = dets[
                (dets[:, -1] >= score_threshold) & (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])
            ]
            found.append(dets)
        return found

    def detect(
        self, images: np.ndarray, score_threshold: float = 0.75, nms_iou: float = 0.3
    ) -> list[np.ndarray]:
        """Per image, detections (K, 17) in input pixels after MediaPipe's weighted NMS, best first."""
        return [weighted_nms(dets, nms_iou) for dets in self.candidates(images, score_threshold)]


@lru_cache(maxsize=8)
def shared_network(spec: NetworkSpec, device: str, backend: str) -> BlazeFaceNetwork:
    """One loaded network per (spec, device, backend) in a process: detectors made by `dataclasses.replace` (the
    video face follower) or per request share it instead of loading weights and opening sessions again."""
    return BlazeFaceNetwork(spec, device, backend)  # type: ignore[arg-type]


class BlazeFaceDetector:
    """The short-range network at its trained input, 128x128: detections as fractions of the input side."""

    INPUT_SIZE = blazeface.INPUT_SIZE

    def __init__(
        self,
        score_threshold: float = 0.75,
        nms_iou: float = 0.3,
        device: str | torch.device = "cpu",
        backend: Backend = "auto",
    ) -> None:
        """`nms_iou` is MediaPipe's min_suppression_threshold: boxes overlapping more than this are merged."""
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.network = BlazeFaceNetwork(SHORT_RANGE, device, backend)
        self.backend = self.network.backend
        self.anchors = blazeface.generate_anchors(self.INPUT_SIZE)

    def _check(self, images: np.ndarray) -> np.ndarray:
        size = self.INPUT_SIZE
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 RGB images N x {size} x {size} x 3, got {images.dtype} {images.shape}"
            )
        return images

    def raw_outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's raw (regressors [N,896,16], classificators [N,896,1]) as float32 numpy."""
        return self.network.raw_outputs(self._check(images))

    def detect(self, images: np.ndarray) -> list[np.ndarray]:
        """Per image, float32 (K, 17) detections [x0, y0, x1, y1, kp0x, kp0y, ..., kp5x, kp5y, score], best first."""
        if len(images) == 0:
            return []
        regressors, classificators = self.raw_outputs(images)
        return blazeface.postprocess(
            regressors, classificators, self.anchors, self.score_threshold, self.nms_iou, self.INPUT_SIZE
        )


__all__ = [
    "BACKENDS",
    "FULL_RANGE",
    "NUM_KEYPOINTS",
    "SHORT_RANGE",
    "BlazeFaceDetector",
    "BlazeFaceNetwork",
    "NetworkSpec",
    "grid_anchors",
    "onnx_path",
    "shared_network",
]
