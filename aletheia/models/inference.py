"""The classifier at inference, without torch: ONNX Runtime or OpenVINO on exported files, and the exported models
that ship with the package.

Every classifier answers `infer(batch, with_attention) -> (logits (n, 1 + K), attention (n, 1, h, w) or None)` on a
float32 NCHW batch already normalised (aletheia.models.preprocessing). The torch backend (aletheia.models.runtime)
answers the same.

An exported model is an ONNX file beside its checkpoint (`aletheia-lite2.onnx` for `aletheia-lite2.pth`) with a
JSON sidecar (`aletheia-lite2.onnx.json`) holding everything needed to use it without torch: architecture, kinds,
calibration, preprocessing, and the SHA-256 of the checkpoint it was exported from. `tools/export_onnx.py` writes
them; a sidecar whose SHA-256 is not the checkpoint's is stale and not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aletheia.models.config import ModelConfig
from aletheia.models.preprocessing import Preprocessing
from aletheia.models.spec import DEFAULT_MODEL as BUNDLED_MODEL
from aletheia.models.spec import CheckpointError, ModelSpec, resolve_model_arguments

__all__ = [
    "BACKENDS",
    "BUNDLED_MODEL",
    "EXPORT_FORMAT",
    "CompiledClassifier",
    "ExportedModel",
    "OnnxClassifier",
    "OpenVinoClassifier",
    "exported_model",
    "named_export",
    "open_classifier",
    "spec_export",
    "sha256_file",
]

BACKENDS = ("torch", "onnx", "openvino")
INPUT, LOGITS, ATTENTION = "input", "logits", "attention"
EXPORT_FORMAT = 1


class CompiledClassifier:
    """Common interface of the exported backends; subclasses implement `_run` on a float32 NCHW array."""

    backend: str = ""

    def __init__(self, path: str | os.PathLike[str], config: ModelConfig, output_names: list[str]) -> None:
        self.path = Path(path)
        self.config = config
        self.has_attention = ATTENTION in output_names
        self._outputs = output_names

    def infer(self, batch: np.ndarray, with_attention: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (n, 1 + K), attention (n, 1, h, w) if asked and the model has it) as float32 numpy."""
        out = dict(zip(self._outputs, self._run(self._checked(batch)), strict=True))
        return out[LOGITS], out.get(ATTENTION) if with_attention else None

    # The torch module's interface, for code (and tests) written against it: torch tensors in and out.
    def __call__(self, x: Any) -> Any:
        """Logits [N, 1 + K] as a torch tensor for a float32 NCHW batch (tensor or array)."""
        import torch

        return torch.from_numpy(self.infer(_to_numpy(x))[0])

    def forward_with_attention(self, x: Any) -> tuple[Any, Any]:
        """Logits and attention [N, 1, h, w] as torch tensors, as the torch model's method of the same name."""
        import torch

        if not self.has_attention:
            raise AttributeError(
                f"{self.config.name} ({self.backend}) was exported without an attention output"
            )
        logits, attention = self.infer(_to_numpy(x), with_attention=True)
        return torch.from_numpy(logits), torch.from_numpy(attention)

    def eval(self) -> CompiledClassifier:
        """No-op, so code written for an `nn.Module` keeps working."""
        return self

    def to(self, device: Any) -> CompiledClassifier:
        if str(device).split(":")[0] != "cpu":
            raise ValueError(f"the {self.backend} backend runs on the CPU only, not {device}")
        return self

    def _checked(self, x: np.ndarray) -> np.ndarray:
        size = self.config.input_size
        array = np.ascontiguousarray(x, dtype=np.float32)
        # The graph is traced at one input size; say so plainly rather than with a runtime's shape error.
        if array.ndim != 4 or array.shape[1:] != (3, size, size):
            raise ValueError(
                f"expected a float32 batch of shape (N, 3, {size}, {size}), got {tuple(array.shape)}"
            )
        return array

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().to("cpu").float().numpy()
    return np.asarray(x, dtype=np.float32)


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

    `precision="f32"` matches torch to ~1e-6. `"bf16"` (OpenVINO's own default on CPUs with AVX512-BF16) is
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

        from aletheia.onnxrt import default_num_threads

        properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if num_threads or default_num_threads():
            properties["INFERENCE_NUM_THREADS"] = num_threads or default_num_threads()
        self.compiled = ov.Core().compile_model(str(path), "CPU", properties)
        super().__init__(path, config, [o.get_any_name() for o in self.compiled.outputs])

    def _run(self, array: np.ndarray) -> list[np.ndarray]:
        # CompiledModel.__call__ serialises concurrent calls and copies outputs out of its request buffers.
        result = self.compiled(array, share_inputs=True)
        return [result[output] for output in self.compiled.outputs]


# -- exported models -----------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_paths(checkpoint: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(ONNX file, JSON sidecar) of a checkpoint's export: beside it, same stem."""
    onnx = Path(checkpoint).with_suffix(".onnx")
    return onnx, onnx.with_name(onnx.name + ".json")


@dataclass(frozen=True)
class ExportedModel:
    """A checkpoint's ONNX export and what its sidecar says, ready to run without torch."""

    onnx: Path
    config: ModelConfig
    metadata: dict[str, Any]

    def classifier(self, backend: str = "onnx") -> CompiledClassifier:
        if backend == "onnx":
            return OnnxClassifier(self.onnx, self.config)
        if backend == "openvino":
            return OpenVinoClassifier(self.onnx, self.config)
        raise ValueError(f"an exported model runs on onnx or openvino, not {backend!r}")


def config_from_metadata(metadata: dict[str, Any], source: str) -> ModelConfig:
    """The ModelConfig an export's sidecar describes (the registry is not consulted: it would need torch)."""
    settings = Preprocessing.from_json(metadata.get("preprocessing", {}), source)
    try:
        return ModelConfig(
            name=str(metadata["architecture"]),
            input_size=settings.input_size,
            mean=settings.mean,
            std=settings.std,
            threshold=float(metadata["threshold"]),
            temperature=float(metadata["temperature"]),
            crop_margin=float(metadata.get("crop_margin", settings.margin)),
            has_attention=bool(metadata["has_attention"]),
            kinds=tuple(metadata.get("kinds", ())),
            face_policy=settings.face_policy,
            band=None if metadata.get("band") is None else tuple(float(v) for v in metadata["band"]),
            max_spread=None if metadata.get("max_spread") is None else float(metadata["max_spread"]),
            calibrated_tta=metadata.get("tta"),
            # Provenance names the weights the export was made from, as it would for the checkpoint itself.
            weights_sha256=metadata.get("source_sha256"),
            weights_path=metadata.get("checkpoint_path"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: incomplete export metadata ({exc})") from exc


@lru_cache(maxsize=8)
def _checkpoint_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def exported_model(checkpoint: str | os.PathLike[str], warn_if_stale: bool = True) -> ExportedModel | None:
    """The checkpoint's export when there is one and it was made from these very weights; else None (a stale
    export, whose checkpoint has since been replaced, is reported with a warning: run tools/export_onnx.py)."""
    checkpoint = Path(checkpoint)
    onnx, sidecar = export_paths(checkpoint)
    if not (checkpoint.is_file() and onnx.is_file() and sidecar.is_file()):
        return None
    metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    stat = checkpoint.stat()
    if metadata.get("format") != EXPORT_FORMAT or metadata.get("source_sha256") != _checkpoint_sha256(
        str(checkpoint), stat.st_size, stat.st_mtime_ns
    ):
        if warn_if_stale:
            warnings.warn(
                f"{onnx.name} was not exported from the current {checkpoint.name} (or by another version of "
                "the exporter): it is ignored and the checkpoint is loaded with torch instead. Rewrite it with "
                "`python tools/export_onnx.py`",
                UserWarning,
                stacklevel=2,
            )
        return None
    metadata = {**metadata, "checkpoint_path": str(checkpoint)}
    return ExportedModel(onnx, config_from_metadata(metadata, str(sidecar)), metadata)


def named_export(onnx: str | os.PathLike[str]) -> ExportedModel:
    """An export named by its .onnx file: run as its sidecar describes it, whatever is beside it."""
    onnx = Path(onnx)
    _, sidecar = export_paths(onnx)
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{sidecar}: cannot read the export's sidecar ({exc})") from exc
    if metadata.get("format") != EXPORT_FORMAT:
        raise CheckpointError(
            f"{sidecar}: written by another version of the exporter (format {metadata.get('format')!r}, this "
            f"version reads {EXPORT_FORMAT}); export it again with `python tools/export_onnx.py --checkpoint`"
        )
    # Results name the ONNX file as the weights (its model card is looked for beside it); their SHA-256 is the
    # checkpoint's it was exported from, as for that checkpoint's own results.
    metadata = {**metadata, "checkpoint_path": str(onnx)}
    try:
        return ExportedModel(onnx, config_from_metadata(metadata, str(sidecar)), metadata)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def spec_export(spec: ModelSpec) -> ExportedModel | None:
    """The export a resolved spec runs from without torch: the .onnx it named, or the current export beside its
    checkpoint (of the architecture it asks for); None when it has none."""
    if spec.exported and spec.onnx is not None:
        return named_export(spec.onnx)
    if spec.onnx is None or spec.checkpoint is None:
        return None
    exported = exported_model(spec.checkpoint)
    if exported is None or (spec.architecture and spec.architecture.lower() != exported.config.name.lower()):
        return None
    return exported


def open_classifier(
    model_name: str | os.PathLike[str] | ModelSpec | None,
    model_checkpoint: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
    backend: str = "auto",
) -> tuple[Any, ModelConfig, str]:
    """(classifier answering `infer`, its config, a label for results) for the pipeline.

    The model is any spec (aletheia.models.spec; none: the bundled model), or a checkpoint with `model_name` naming
    its architecture. `backend` "auto" is ONNX Runtime on a CPU and torch elsewhere. On ONNX Runtime or OpenVINO, a
    named .onnx, or a checkpoint with a current export beside it, runs from that export, without torch. Everything
    else (a user's .pth, published weights, the torch backend, a GPU) is loaded with torch
    (aletheia.models.loader), and exported to the ONNX cache when an exported backend is asked for.
    """
    on_cpu = str(device).split(":")[0] == "cpu"
    if backend == "auto":
        backend = "onnx" if on_cpu else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    spec = resolve_model_arguments(model_name, model_checkpoint)
    if backend != "torch" and on_cpu:
        exported = spec_export(spec)
        if exported is not None:
            return exported.classifier(backend), exported.config, spec.name
    elif (
        spec.exported
        and spec.checkpoint is not None
        and not exported_model(spec.checkpoint, warn_if_stale=False)
    ):
        raise CheckpointError(
            f"{spec.onnx} was not exported from the {spec.checkpoint.name} beside it, so torch cannot run it; "
            "use the onnx or openvino backend on a CPU, or pass the checkpoint itself"
        )
    from aletheia.models import loader
    from aletheia.models.runtime import TorchClassifier, compile_classifier

    model, config, label = loader.load_classifier(spec, device=device)
    if backend == "torch":
        return TorchClassifier(model, config, device), config, label
    return compile_classifier(model, config, backend), config, label
