"""The two BlazeFace networks behind one interface: shipped ONNX files or torch, any input size.

Both are fully convolutional, so they run on whole images of any size whose sides are multiples of
`NetworkSpec.size_multiple`: anchors are then laid on the larger grid, one cell per output pixel, exactly where a
tile of the trained input size would put them. Decoded detections are in input pixels (MediaPipe's fixed-size
anchors scale offsets by the input side, so raw outputs already are pixel offsets).

On the CPU the networks run on ONNX Runtime by default (`backend="auto"`), from ONNX files shipped in
`aletheia/assets/blazeface/` (uint8 NHWC in; dynamic batch, height and width), written by `tools/export_onnx.py`
and tested against torch (tests/faces/test_blazeface.py). That path imports no torch; `backend="torch"` (and any
device other than the CPU) loads the PyTorch reimplementation from the shipped state dicts.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from aletheia.faces.detections import (
    ASSETS,
    FULL_RANGE_INPUT_SIZE,
    FULL_RANGE_SIZE_MULTIPLE,
    FULL_RANGE_STRIDE,
    FULL_RANGE_WEIGHTS,
    NUM_KEYPOINTS,
    SHORT_RANGE_ANCHOR_LAYOUT,
    SHORT_RANGE_INPUT_SIZE,
    SHORT_RANGE_WEIGHTS,
    decode,
    generate_anchors,
    postprocess,
    weighted_nms,
)

Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    input_size: int  # the square side it was trained on
    size_multiple: int  # input sides must be multiples of this
    # (stride, anchors per cell) of each output map, in output order
    anchor_layout: tuple[tuple[int, int], ...]
    weights: Path  # the PyTorch state dict, converted from MediaPipe's .tflite
    onnx: Path  # the same network as ONNX, uint8 NHWC in (tools/export_onnx.py)
    torch_class: str  # "module:Class" of the PyTorch network, imported only when torch is asked for

    def build(self) -> Any:
        """A fresh PyTorch network (random weights): imports torch."""
        module, name = self.torch_class.split(":")
        return getattr(importlib.import_module(module), name)()


SHORT_RANGE = NetworkSpec(
    "short-range",
    SHORT_RANGE_INPUT_SIZE,
    16,
    SHORT_RANGE_ANCHOR_LAYOUT,
    SHORT_RANGE_WEIGHTS,
    ASSETS / "blazeface_short_range.onnx",
    "aletheia.faces.blazeface:BlazeFace",
)
FULL_RANGE = NetworkSpec(
    "full-range",
    FULL_RANGE_INPUT_SIZE,
    FULL_RANGE_SIZE_MULTIPLE,
    ((FULL_RANGE_STRIDE, 1),),
    FULL_RANGE_WEIGHTS,
    ASSETS / "blazeface_full_range.onnx",
    "aletheia.faces.full_range:BlazeFaceFullRange",
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


def onnx_path(spec: NetworkSpec) -> Path:
    """The shipped ONNX file of a network; a clear error if a checkout lacks it."""
    if not spec.onnx.is_file():
        raise FileNotFoundError(
            f"{spec.onnx} is missing: write it with `python tools/export_onnx.py` (needs torch), "
            "or use the torch backend"
        )
    return spec.onnx


def _device_type(device: Any) -> str:
    """The device's type ("cpu" for "cpu" or torch.device("cpu"), "cuda" for "cuda:1") without importing torch."""
    return str(device).split(":")[0]


class BlazeFaceNetwork:
    """One BlazeFace network on uint8 RGB batches N x H x W x 3 (sides multiples of `spec.size_multiple`).

    `backend`: "torch", "onnx" (ONNX Runtime, CPU only) or "auto": ONNX on the CPU, torch on other devices.
    """

    def __init__(
        self, spec: NetworkSpec, device: Any = "cpu", backend: Backend = "auto", threads: int | None = None
    ) -> None:
        """`threads`: ONNX Runtime's threads per run (None: the process's count, aletheia.onnxrt)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown BlazeFace backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.spec = spec
        self.device = device
        on_cpu = _device_type(device) == "cpu"
        if backend == "auto":
            backend = "onnx" if on_cpu else "torch"
        if backend == "onnx" and not on_cpu:
            raise ValueError(f"the onnx BlazeFace backend runs on the CPU only, not {device}")
        self.backend: str = backend
        self.model = None
        self._session = None
        if backend == "torch":
            from aletheia.faces.torch_networks import shipped_model

            self.model = shipped_model(spec).to(device)
        else:
            from aletheia.onnxrt import cpu_session

            self._session = cpu_session(onnx_path(spec), threads)

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
        from aletheia.faces.torch_networks import run_torch

        return run_torch(self.model, images)

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
def shared_network(
    spec: NetworkSpec, device: str, backend: str, threads: int | None = None
) -> BlazeFaceNetwork:
    """One loaded network per (spec, device, backend, threads) in a process: detectors made by `dataclasses.replace`
    (the video face follower) or per request share it instead of loading weights and opening sessions again."""
    return BlazeFaceNetwork(spec, device, backend, threads)  # type: ignore[arg-type]


class BlazeFaceDetector:
    """The short-range network at its trained input, 128x128: detections as fractions of the input side."""

    INPUT_SIZE = SHORT_RANGE_INPUT_SIZE

    def __init__(
        self,
        score_threshold: float = 0.75,
        nms_iou: float = 0.3,
        device: Any = "cpu",
        backend: Backend = "auto",
    ) -> None:
        """`nms_iou` is MediaPipe's min_suppression_threshold: boxes overlapping more than this are merged."""
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.network = BlazeFaceNetwork(SHORT_RANGE, device, backend)
        self.backend = self.network.backend
        self.anchors = generate_anchors(self.INPUT_SIZE)

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
        return postprocess(
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
