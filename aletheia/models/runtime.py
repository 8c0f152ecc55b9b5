"""Faster CPU inference for torch classifiers: exported to ONNX, run on ONNX Runtime or OpenVINO.

``compile_classifier(model, config, backend)`` returns something usable like the torch module:
``clf(batch) -> logits [N, 1]`` (a torch tensor), ``clf.forward_with_attention(batch) -> (logits, attention)``,
``clf.config`` and ``clf.has_attention``; exported ones also answer ``infer`` on numpy (aletheia.models.inference).
The ONNX file is exported once and cached under a SHA-256 of the weights, the architecture name and the input size,
so restarts only pay for loading it. ``export_checkpoint`` writes a checkpoint's export beside it instead, with the
sidecar that lets it run without torch (tools/export_onnx.py, for the bundled model).

Measured on a 2-core CPU (benchmarks/classifier_backends.py): ONNX Runtime and OpenVINO f32 are several times
faster than eager torch and match it within a few 1e-6. OpenVINO defaults to bf16 on CPUs with AVX512-BF16, which is
faster still but moved logits by up to 3e-2 and attention maps by up to 8e-2 in our tests, so f32 is requested.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

# The exported backends need no torch; they live in aletheia.models.inference and are re-exported here.
from aletheia.models.inference import (
    ATTENTION,
    BACKENDS,
    EXPORT_FORMAT,
    INPUT,
    LOGITS,
    CompiledClassifier,
    OnnxClassifier,
    OpenVinoClassifier,
    export_paths,
    sha256_file,
)
from aletheia.models.registry import ModelConfig

__all__ = [
    "BACKENDS",
    "CompiledClassifier",
    "OnnxClassifier",
    "OpenVinoClassifier",
    "TorchClassifier",
    "compile_classifier",
    "cached_onnx",
    "default_onnx_cache_dir",
    "export_checkpoint",
    "export_onnx",
    "onnx_cache_key",
]

ONNX_OPSET = 17
# Bump when the exported graph changes for the same weights, so stale cache files are not reused.
_EXPORT_VERSION = 1


class _WithAttention(nn.Module):
    """Makes ``forward_with_attention`` the traced forward, so one graph yields both outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_attention(x)


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], input_size: int, with_attention: bool
) -> Path:
    """Write ``model`` as ONNX (dynamic batch axis; outputs ``logits`` and, if asked, ``attention``) to ``path``.

    The caller's model is left untouched: export works on a CPU deep copy in eval mode. The file appears
    atomically, so a concurrent reader never sees half of it.
    """
    net = copy.deepcopy(model).cpu().eval()
    # efficientnet-pytorch's memory-efficient swish is a custom autograd.Function: torch 2.13's TorchScript
    # exporter happens to inline it, but other exporters/versions refuse it; plain swish exports everywhere.
    if callable(getattr(net, "set_swish", None)):
        net.set_swish(memory_efficient=False)
    if with_attention:
        net = _WithAttention(net)
    outputs = [LOGITS, ATTENTION] if with_attention else [LOGITS]
    # Batch 2, not 1: tracing at 1 risks a batch dimension folded into a constant.
    dummy = torch.zeros(2, 3, input_size, input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy (TorchScript) exporter is deprecated and chatty; dynamo=True would need onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(
                net,
                (dummy,),
                tmp_name,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT],
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [INPUT, *outputs]},
            )
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return path


def onnx_cache_key(model: nn.Module, name: str, input_size: int, with_attention: bool) -> str:
    """SHA-256 over the weights (names, shapes, dtypes, bytes), architecture, input size and graph outputs."""
    digest = hashlib.sha256(
        f"v{_EXPORT_VERSION}|opset{ONNX_OPSET}|{name}|{input_size}|attention={with_attention}".encode()
    )
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"|{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        # Raw bytes through a uint8 view: works for every dtype, bf16 included (numpy has no bf16).
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def default_onnx_cache_dir() -> Path:
    """``$ALETHEIA_CACHE/onnx`` if set, else ``~/.cache/aletheia/onnx``."""
    env = os.environ.get("ALETHEIA_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "aletheia") / "onnx"


def cached_onnx(
    model: nn.Module, config: ModelConfig, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Path of the model's ONNX file in the cache, exporting it first if it is not there."""
    with_attention = bool(config.has_attention)
    key = onnx_cache_key(model, config.name, config.input_size, with_attention)
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_onnx_cache_dir()
    path = directory / f"{config.name}-{config.input_size}px-{key}.onnx"
    if not path.is_file():
        export_onnx(model, path, config.input_size, with_attention)
    return path


class TorchClassifier:
    """A torch model behind the exported classifiers' `infer` interface (numpy in and out), on its device."""

    backend = "torch"

    def __init__(self, model: nn.Module, config: ModelConfig, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.device = torch.device(device)
        self.has_attention = bool(config.has_attention)

    def infer(self, batch: np.ndarray, with_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if with_attention and self.has_attention:
                logits, attention = self.model.forward_with_attention(x)
                return logits.float().cpu().numpy(), attention.float().cpu().numpy()
            return self.model(x).float().cpu().numpy(), None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_attention(x)


def compile_classifier(
    model: nn.Module,
    config: ModelConfig,
    backend: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> nn.Module | CompiledClassifier:
    """``model`` ready for inference on ``backend``: "torch" (the module itself, in eval mode), "onnx" or
    "openvino" (exported once to ``cache_dir``, default ``$ALETHEIA_CACHE/onnx`` or ``~/.cache/aletheia/onnx``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "torch":
        return model.eval()
    path = cached_onnx(model, config, cache_dir)
    if backend == "onnx":
        return OnnxClassifier(path, config)
    return OpenVinoClassifier(path, config)


def export_checkpoint(
    model: nn.Module, config: ModelConfig, checkpoint: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write `checkpoint`'s export beside it: the ONNX file (with attention when the model has it) and the sidecar
    with everything needed to run it without torch (`config` as loaded: calibration and preprocessing included)
    and the checkpoint's SHA-256, so an export left behind by newer weights is known to be stale."""
    onnx, sidecar = export_paths(checkpoint)
    with_attention = bool(config.has_attention)
    export_onnx(model, onnx, config.input_size, with_attention)
    metadata = {
        "format": EXPORT_FORMAT,
        "architecture": config.name,
        "source": Path(checkpoint).name,
        "source_sha256": sha256_file(checkpoint),
        "onnx_sha256": sha256_file(onnx),
        "threshold": config.threshold,
        "temperature": config.temperature,
        "crop_margin": config.crop_margin,
        "kinds": list(config.kinds),
        "band": None if config.band is None else list(config.band),
        "max_spread": config.max_spread,
        "tta": config.calibrated_tta,
        "has_attention": with_attention,
        "outputs": [LOGITS, ATTENTION] if with_attention else [LOGITS],
        "preprocessing": config.preprocessing.to_json(),
        "opset": ONNX_OPSET,
        "exported_with": {"torch": torch.__version__.split("+")[0]},
    }
    sidecar.write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
    return onnx, sidecar
