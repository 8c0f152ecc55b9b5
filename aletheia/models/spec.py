"""One way from a name to a model: `resolve_model_spec` turns what a user names into a `ModelSpec`.

A model spec is, in this order:
  * a file: a checkpoint (.pth and the like; its export is used when one is beside it) or an exported model
    (.onnx with its .onnx.json sidecar, run as exported, without torch);
  * a bundled model by name: the stem or file name of a checkpoint in aletheia/assets/models/ ("aletheia-lite2",
    or "aletheia-lite2.pth" as results print it); no spec at all means the default bundled model;
  * a published-weights name (`aletheia weights list`), used from the cache;
  * a registered architecture (`aletheia models`): no trained weights, so only training and `load_model` take it.
The CLI, the server, evaluation and the Python API all resolve through here, so a spec means the same model in each.

Resolution looks at names and files only: it reads no weights and imports no torch (detection on a CPU runs
without it), except to look a name up among the registered architectures once nothing else matched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from aletheia.models.published import PUBLISHED_WEIGHTS, cached_weights_path

__all__ = [
    "BUNDLED_DIR",
    "DEFAULT_MODEL",
    "KINDS",
    "CheckpointError",
    "ModelSpec",
    "UnknownModelSpecError",
    "bundled_models",
    "resolve_model_arguments",
    "resolve_model_spec",
]

KINDS = ("bundled", "published", "file", "registered")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
# The model trained by Aletheia's own pipeline, used when no model is named (see its MODEL_CARD.md).
DEFAULT_MODEL = BUNDLED_DIR / "aletheia-lite2.pth"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
ONNX_SUFFIX = ".onnx"


class CheckpointError(ValueError):
    """A model spec names nothing usable, or a checkpoint cannot be read or does not fit its model."""


class UnknownModelSpecError(CheckpointError):
    """A spec that is no file, bundled model, published weights or registered architecture; the message lists
    those there are."""


@dataclass(frozen=True)
class ModelSpec:
    """What a model spec names, and where its files are. Nothing is loaded."""

    kind: str  # one of KINDS
    name: str  # what results print as "model": the file name, or the published or architecture name
    architecture: str | None  # None: read from the checkpoint when it loads
    checkpoint: Path | None  # the weights torch loads (published: where the download is cached, there or not)
    onnx: Path | None  # an export beside it that runs without torch (its sidecar: `sidecar`)
    exported: bool = (
        False  # the spec named the .onnx itself: it runs as exported, its sidecar gives its settings
    )
    given: str | None = None  # the spec as written (None: the default bundled model)

    @property
    def sidecar(self) -> Path | None:
        return None if self.onnx is None else self.onnx.with_name(self.onnx.name + ".json")

    @property
    def argument(self) -> str:
        """A spec string that names this same model from any working folder (files by absolute path)."""
        path = self.onnx if self.exported else self.checkpoint
        if self.kind in ("bundled", "file") and path is not None:
            return str(path.resolve())
        return self.name

    @property
    def aliases(self) -> frozenset[str]:
        """The names that select this model where several are held (a server): as printed, as given, and a bundled
        model's stem. Strings only: a request never makes the server look at its files."""
        names = {self.name} | ({self.given} if self.given else set())
        if self.kind == "bundled" and self.checkpoint is not None:
            names.add(self.checkpoint.stem)
        return frozenset(names)


def bundled_models() -> dict[str, Path]:
    """The checkpoints shipped in the package, by name (file stem), the default first."""
    found = sorted(BUNDLED_DIR.glob("*.pth")) if BUNDLED_DIR.is_dir() else []
    by_name = {path.stem: path for path in found}
    if DEFAULT_MODEL.is_file():
        by_name = {DEFAULT_MODEL.stem: DEFAULT_MODEL, **by_name}
    return by_name


def resolve_model_spec(
    spec: str | os.PathLike[str] | ModelSpec | None = None,
    *,
    arch: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelSpec:
    """The model a spec names (see the module's docstring for what a spec may be, in which order).

    `arch` names the architecture of a checkpoint file whose keys do not tell it (ignored for names: they say
    theirs). `cache_dir`: where published weights are cached (default: `aletheia.models.published`'s).
    Raises CheckpointError, saying what is available, when the spec names nothing usable.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if spec is None:
        if not DEFAULT_MODEL.is_file():
            raise CheckpointError(_NO_MODEL)
        return _checkpoint_spec("bundled", DEFAULT_MODEL, arch, None)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return _file_spec(path, arch, text)
    for stem, bundled in bundled_models().items():
        if text in (stem, bundled.name):
            return _checkpoint_spec("bundled", bundled, arch, text)
    if text in PUBLISHED_WEIGHTS:
        entry = PUBLISHED_WEIGHTS[text]
        return ModelSpec("published", text, entry.architecture, cached_weights_path(text, cache_dir), None,
                         given=text)  # fmt: skip
    if path.suffix.lower() in (*CHECKPOINT_SUFFIXES, ONNX_SUFFIX) or os.sep in text or "/" in text:
        raise CheckpointError(f"{path}: no such checkpoint file. {available_models()}")
    registered = _registered_name(text)
    if registered is not None:
        return ModelSpec("registered", registered, registered, None, None, given=text)
    raise UnknownModelSpecError(f"unknown model {text!r}. {available_models()}")


def resolve_model_arguments(
    model_name: str | os.PathLike[str] | ModelSpec | None, model_checkpoint: str | os.PathLike[str] | None
) -> ModelSpec:
    """The Python API's two arguments as one spec: a checkpoint (whose architecture `model_name` then names, when
    its keys cannot tell it), else `model_name` as any spec; neither: the default bundled model."""
    if model_checkpoint is None:
        return resolve_model_spec(model_name)
    try:
        return resolve_model_spec(
            model_checkpoint, arch=None if model_name is None else os.fspath(model_name)
        )
    except UnknownModelSpecError as exc:
        path = Path(model_checkpoint).expanduser()
        raise CheckpointError(f"{path}: no such checkpoint file. {available_models()}") from exc


def available_models() -> str:
    """What can be named, for error messages."""
    bundled = ", ".join(bundled_models()) or "none"
    published = ", ".join(name for name, entry in PUBLISHED_WEIGHTS.items() if entry.loadable)
    try:
        from aletheia.models.registry import list_models
    except ImportError:  # a minimal install: the architectures come with torch
        registered = 'listed once the training extras are installed (pip install "aletheia[train]")'
    else:
        registered = ", ".join(list_models())
    return (
        f"Name a bundled model ({bundled}), published weights ({published}; `aletheia weights download NAME` "
        f"first) or a checkpoint file (.pth, or .onnx with its .onnx.json); registered architectures: {registered}"
    )


_NO_MODEL = (
    "no model given and no default model is bundled: download a published ISPL checkpoint (`aletheia weights "
    "download EfficientNetAutoAttB4_DFDC`, then `--model EfficientNetAutoAttB4_DFDC`) or pass a checkpoint file "
    "(`--model path/to/weights.pth`; in Python `model_checkpoint=...`). `aletheia weights list` shows what exists"
)


def _checkpoint_spec(kind: str, checkpoint: Path, arch: str | None, given: str | None) -> ModelSpec:
    """A checkpoint, with its export when one is beside it (whether it is current is checked when it loads)."""
    onnx = checkpoint.with_suffix(ONNX_SUFFIX)
    beside = onnx if onnx.is_file() and onnx.with_name(onnx.name + ".json").is_file() else None
    return ModelSpec(kind, checkpoint.name, arch, checkpoint, beside, given=given)


def _file_spec(path: Path, arch: str | None, given: str) -> ModelSpec:
    if path.suffix.lower() != ONNX_SUFFIX:
        return _checkpoint_spec("file", path, arch, given)
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        raise CheckpointError(
            f"{path}: an exported model needs its sidecar {sidecar.name} beside it, with its architecture, "
            "calibration and preprocessing (tools/export_onnx.py writes both)"
        )
    try:
        architecture = str(json.loads(sidecar.read_text(encoding="utf-8"))["architecture"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: not an export sidecar ({exc})") from exc
    if arch is not None and arch.lower() != architecture.lower():
        raise CheckpointError(f"{path} is an export of {architecture}, not of {arch}")
    checkpoint = path.with_suffix(".pth")
    return ModelSpec("file", path.name, architecture, checkpoint if checkpoint.is_file() else None, path,
                     exported=True, given=given)  # fmt: skip


def _registered_name(text: str) -> str | None:
    """The registered architecture `text` names (case forgiven), or None; imports torch to ask."""
    try:
        from aletheia.models.registry import UnknownModelError, get_config
    except ImportError:
        return None
    try:
        return get_config(text).name
    except UnknownModelError:
        return None
