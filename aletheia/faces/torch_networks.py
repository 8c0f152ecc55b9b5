"""The BlazeFace networks in PyTorch: shipped weights, the torch backend, and the export that writes the ONNX files.

Imported only when torch is asked for (`backend="torch"`, a GPU, `tools/export_onnx.py`, tests); detection on the
CPU runs the ONNX files this module exported (aletheia.faces.networks).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aletheia.faces.networks import NetworkSpec

ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAMES = "images", ("regressors", "classificators")


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


def run_torch(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(regressors, classificators) as float32 numpy for a uint8 NHWC batch, on the model's device."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        regressors, classificators = model(normalise(torch.from_numpy(images).to(device)))
    return regressors.cpu().numpy(), classificators.cpu().numpy()


class _Uint8Input(nn.Module):
    """A network taking the detector's own input, uint8 N x H x W x 3, so ONNX does the normalisation too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(normalise(images))


def export_onnx(spec: NetworkSpec, path: str | os.PathLike[str]) -> Path:
    """Write the shipped network as ONNX (uint8 NHWC in; dynamic batch, height, width) to `path`, atomically, laid
    out for ONNX Runtime's CPU kernels (aletheia.faces.onnx_layout: the same outputs, about 1.6x faster)."""
    from aletheia.faces.onnx_layout import for_onnx_runtime, optimise_exported

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # Batch 2 and a non-square size: tracing at 1 or a square risks a dimension folded into a constant.
    example = torch.zeros(2, spec.input_size, spec.input_size + 2 * spec.size_multiple, 3, dtype=torch.uint8)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated and chatty
            torch.onnx.export(
                _Uint8Input(for_onnx_runtime(shipped_model(spec))),
                (example,),
                tmp_name,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 1: "height", 2: "width"},
                    **{name: {0: "batch", 1: "anchors"} for name in OUTPUT_NAMES},
                },
            )
        optimise_exported(Path(tmp_name))
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path
