"""Faster CPU inference for the classifiers: the same call interface on ONNX Runtime or OpenVINO.

``compile_classifier(model, config, backend)`` returns something the pipeline can use like the torch module:
``clf(batch) -> logits [N, 1]`` (a torch tensor), ``clf.forward_with_attention(batch) -> (logits, attention)``,
``clf.config`` and ``clf.has_attention``. The ONNX file is exported once and cached under a SHA-256 of the
weights, the architecture name and the input size, so restarts only pay for loading it.

Measured on a 2-core CPU (benchmarks/classifier_backends.py): ONNX Runtime and OpenVINO f32 are several times
faster than eager torch and match it within a few 1e-6. OpenVINO defaults to bf16 on CPUs with AVX512-BF16, which is
faster still but moved logits by up to 3e-2 and attention maps by up to 8e-2 in our tests, so f32 is requested.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aletheia.models.registry import ModelConfig

__all__ = [
    "BACKENDS",
    "CompiledClassifier",
    "OnnxClassifier",
    "OpenVinoClassifier",
    "compile_classifier",
    "cached_onnx",
    "default_onnx_cache_dir",
    "export_onnx",
    "onnx_cache_key",
]

BACKENDS = ("torch", "onnx", "openvino")
ONNX_OPSET = 17
INPUT, LOGITS, ATTENTION = "input", "logits", "attention"
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


class CompiledClassifier:
    """Common call interface of the exported backends; subclasses implement ``_run`` on a float32 NCHW array."""

    backend: str = ""

    def __init__(self, path: str | os.PathLike[str], config: ModelConfig, output_names: list[str]) -> None:
        self.path = Path(path)
        self.config = config
        self.has_attention = ATTENTION in output_names
        self._outputs = output_names

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits [N, 1] for a float32 NCHW batch, normalised as for the torch model."""
        return self._infer(x)[LOGITS]

    def forward_with_attention(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N, 1] and attention [N, 1, h, w], as the torch model's method of the same name."""
        if not self.has_attention:
            raise AttributeError(
                f"{self.config.name} ({self.backend}) was exported without an attention output"
            )
        out = self._infer(x)
        return out[LOGITS], out[ATTENTION]

    def eval(self) -> CompiledClassifier:
        """No-op, so code written for an ``nn.Module`` keeps working."""
        return self

    def to(self, device: torch.device | str) -> CompiledClassifier:
        if torch.device(device).type != "cpu":
            raise ValueError(f"the {self.backend} backend runs on the CPU only, not {device}")
        return self

    def _infer(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        array = _as_input(x, self.config.input_size)
        return {
            name: torch.from_numpy(out) for name, out in zip(self._outputs, self._run(array), strict=True)
        }

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


def _as_input(x: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(x, dtype=np.float32)
    # The graph is traced at one input size; say so plainly rather than with a runtime's shape error.
    if array.ndim != 4 or array.shape[1:] != (3, size, size):
        raise ValueError(
            f"expected a float32 batch of shape (N, 3, {size}, {size}), got {tuple(array.shape)}"
        )
    return array


class OnnxClassifier(CompiledClassifier):
    """An exported classifier on ONNX Runtime's CPU provider with all graph optimisations."""

    backend = "onnx"

    def __init__(
        self, path: str | os.PathLike[str], config: ModelConfig, num_threads: int | None = None
    ) -> None:
        from aletheia.onnxrt import cpu_session

        self.session = cpu_session(path, num_threads)
        super().__init__(path, config, [o.name for o in self.session.get_outputs()])

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._outputs, {INPUT: array})


class OpenVinoClassifier(CompiledClassifier):
    """The same ONNX file compiled by OpenVINO for the CPU.

    ``precision="f32"`` matches torch to ~1e-6. ``"bf16"`` (OpenVINO's own default on CPUs with AVX512-BF16) is
    faster at large batches but shifts outputs by up to a few 1e-2: a different model, as far as thresholds go.
    """

    backend = "openvino"

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: ModelConfig,
        num_threads: int | None = None,
        precision: str = "f32",
    ) -> None:
        import openvino as ov

        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": num_threads or torch.get_num_threads(),
        }
        self.compiled = ov.Core().compile_model(str(path), "CPU", properties)
        super().__init__(path, config, [o.get_any_name() for o in self.compiled.outputs])

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        # CompiledModel.__call__ serialises concurrent calls and copies outputs out of its request buffers.
        result = self.compiled(array, share_inputs=True)
        return [result[output] for output in self.compiled.outputs]


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
