"""Loading and recognising classifier checkpoints (needs torch; published weights are in ``published.py``).

* ``load_state_dict_file`` / ``load_checkpoint``: safe (``weights_only``) loading of bare state dicts or trainer
  checkpoints, strict matching with errors that name the offending keys and file.
* ``infer_architecture``: which registered model a state dict belongs to, from its keys and shapes.
* ``resolve_model``: one model spec (``aletheia.models.spec``) -> architecture + weights (published ones downloaded).

``PUBLISHED_WEIGHTS``, ``download_weights`` and their errors are re-exported from ``aletheia.models.published``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .published import (  # noqa: F401  (re-exported: published weights used to live here)
    ISPL_BASE_URL,
    PUBLISHED_WEIGHTS,
    ChecksumError,
    PublishedWeights,
    WeightsDownloadError,
    cached_weights_path,
    default_cache_dir,
    download_weights,
)
from .registry import create_model, get_config, list_models
from .spec import CheckpointError, resolve_model_spec

__all__ = [
    "ISPL_BASE_URL",
    "PUBLISHED_WEIGHTS",
    "CheckpointError",
    "ChecksumError",
    "PublishedWeights",
    "UnsupportedArchitectureError",
    "WeightsDownloadError",
    "default_cache_dir",
    "download_weights",
    "infer_architecture",
    "load_checkpoint",
    "load_model",
    "load_state_dict_file",
    "resolve_model",
]

StateDict = dict[str, torch.Tensor]


class UnsupportedArchitectureError(CheckpointError):
    """A recognised checkpoint for an architecture this package does not implement (yet)."""


# ---------------------------------------------------------------------------------------------------------------
# Reading state dicts
# ---------------------------------------------------------------------------------------------------------------

# Trainer checkpoints keep the weights under one of these keys (ISPL's train_binclass.py uses 'net').
_WRAPPER_KEYS = ("net", "model", "state_dict")
# Wrappers that prefix every key: DataParallel/DistributedDataParallel and torch.compile.
_KEY_PREFIXES = ("module.", "_orig_mod.")


def load_state_dict_file(path: str | os.PathLike[str]) -> StateDict:
    """Read a ``.pth`` file holding a state dict or a trainer checkpoint ({'net'|'model'|'state_dict': ...}).

    Uses ``weights_only=True``: a checkpoint cannot run code when loaded. Wrapper prefixes are stripped.
    """
    return read_checkpoint(path)[0]


# Settings a checkpoint may carry beside its weights; they override the registry's defaults for that model.
METADATA_KEYS = (
    "architecture", "threshold", "temperature", "crop_margin", "model_card", "preprocessing", "band", "max_spread", "tta",
)  # fmt: skip


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[StateDict, dict]:
    """(state dict, metadata): the metadata holds the METADATA_KEYS a trainer checkpoint carries (else empty)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    # Pickle errors, truncated zips, globals refused by weights_only: all mean "not a usable checkpoint".
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(exc)}") from exc
    metadata = {k: obj[k] for k in METADATA_KEYS if isinstance(obj, dict) and k in obj}
    _check_metadata(metadata, str(path))
    return _extract_state_dict(obj, source=str(path)), metadata


def _load_failure(exc: Exception) -> str:
    """Why torch.load failed, without PyTorch's advice to retry with weights_only=False: for a file refused because
    it holds code, that advice is how an attacker's checkpoint gets run."""
    message = str(exc)
    if "Weights only load failed" not in message:
        return message
    found = re.search(r"GLOBAL ([\w.]+)", message)
    what = f" ({found.group(1)})" if found else ""
    return (
        f"it holds a Python object other than tensors and plain values{what}; refused, because loading it could "
        "run code. Only checkpoints of weights and plain settings are accepted"
    )


def _check_metadata(metadata: dict, source: str) -> None:
    """Settings that would silently corrupt every score are refused: a temperature must be finite and above 0 (at
    -1 a real face's 0.22 reads 0.77, at 0 every score is 0), a threshold strictly between 0 and 1."""
    for key, valid, rule in (
        ("temperature", lambda v: v > 0, "finite and above 0"),
        ("threshold", lambda v: 0 < v < 1, "between 0 and 1"),
        ("crop_margin", lambda v: True, "a finite number"),
    ):
        if key not in metadata:
            continue
        value = metadata[key]
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError, RuntimeError):
            number = math.nan
        if not (math.isfinite(number) and valid(number)):
            raise CheckpointError(f"{source}: its {key} must be {rule}, got {value!r}")
    _check_band(metadata, source)


def _check_band(metadata: dict, source: str) -> None:
    """The verdict settings `aletheia calibrate` stores: an inconclusive band (low, high) that holds the threshold,
    a spread limit above 0, and the test-time augmentation they were fitted with."""
    from aletheia.tta import TTA_MODES

    if "band" in metadata:
        band = metadata["band"]
        try:
            low, high = (float(v) for v in band)
        except (TypeError, ValueError, RuntimeError):
            low, high = math.nan, math.nan
        threshold = float(metadata.get("threshold", 0.5))
        if not (0 < low <= threshold <= high < 1):
            raise CheckpointError(
                f"{source}: its band must be (low, high) with 0 < low <= threshold ({threshold}) <= high < 1, "
                f"got {band!r}"
            )
        metadata["band"] = (low, high)
    if "max_spread" in metadata:
        value = metadata["max_spread"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise CheckpointError(
                f"{source}: its max_spread must be a number above 0 and at most 1, got {value!r}"
            )
    if "tta" in metadata and metadata["tta"] not in TTA_MODES:
        raise CheckpointError(
            f"{source}: its tta must be one of {', '.join(TTA_MODES)}, got {metadata['tta']!r}"
        )


def _extract_state_dict(obj: object, source: str) -> StateDict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{source}: expected a state dict or a dict holding one, got {type(obj).__name__}"
        )
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        raise CheckpointError(
            f"{source}: no state dict found (top-level keys: {_preview(list(obj))}); expected tensors by name or "
            f"one of the keys {', '.join(repr(k) for k in _WRAPPER_KEYS)}"
        )
    return _strip_prefixes(tensors)


def _strip_prefixes(state: StateDict) -> StateDict:
    for prefix in _KEY_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, ... ({len(items) - limit} more)" if len(items) > limit else shown


def load_checkpoint(
    model: nn.Module, path_or_state: str | os.PathLike[str] | Mapping[str, object], source: str | None = None
) -> nn.Module:
    """Load weights strictly into ``model`` (returned). Raises ``CheckpointError`` naming missing, unexpected and
    mis-shaped keys, the source, and which architecture the checkpoint looks like when that can be told."""
    if isinstance(path_or_state, str | os.PathLike):
        source = source or str(path_or_state)
        state = load_state_dict_file(path_or_state)
    else:
        source = source or "state dict"
        state = _extract_state_dict(path_or_state, source)

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mis_shaped:
        problems = [
            f"{len(items)} {what} ({_preview(items, 3)})"
            for what, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches (checkpoint vs model)", mis_shaped),
            )
            if items
        ]
        message = f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}"
        with contextlib.suppress(CheckpointError):
            message += f". It looks like a {infer_architecture(state)} checkpoint."
        raise CheckpointError(message)
    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------------------------------------------------------
# Recognising architectures
# ---------------------------------------------------------------------------------------------------------------

# (number of MBConv blocks, head channels) -> family suffix used in registry names.
_BACKBONES: dict[tuple[int, int], str] = {(32, 1792): "B4", (16, 1280): "Lite0", (21, 1280): "Lite2"}
_BLOCK_INDEX = re.compile(r"^efficientnet\._blocks\.(\d+)\.")


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Registry name of the architecture a state dict was saved from (keys as saved, wrapper prefixes allowed).

    Raises ``UnsupportedArchitectureError`` for ISPL's Xception checkpoints and ``CheckpointError`` otherwise.
    """
    state = _strip_prefixes(dict(state_dict))
    if any(k.startswith(("xception.", "feat_ext.xception.")) for k in state):
        raise UnsupportedArchitectureError(
            "this is an Xception checkpoint (ISPL's Xception/XceptionST); Xception is not supported yet. "
            f"Supported architectures: {', '.join(list_models())}"
        )
    siamese = "classifier.0.running_mean" in state and any(k.startswith("feat_ext.") for k in state)
    if siamese:
        state = {k[len("feat_ext.") :]: v for k, v in state.items() if k.startswith("feat_ext.")}

    head = state.get("efficientnet._conv_head.weight")
    if head is None or "classifier.weight" not in state:
        raise CheckpointError(
            f"unrecognised checkpoint: no known architecture has the keys {_preview(list(state))}"
        )
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_INDEX.match(k))}
    family = _BACKBONES.get((len(blocks), head.shape[0]))
    if family is None:
        raise CheckpointError(
            f"unrecognised EfficientNet checkpoint: {len(blocks)} blocks, {head.shape[0]} head channels; "
            f"known: {', '.join(f'{b} blocks/{c} channels' for b, c in _BACKBONES)}"
        )
    attention = any(k.startswith("efficientnet.attconv.") for k in state)
    kinds = "Kinds" if state["classifier.weight"].shape[0] > 1 and not siamese else ""
    name = f"EfficientNet{'AutoAtt' if attention else ''}{family}{'ST' if siamese else ''}{kinds}"
    if name not in list_models():
        raise CheckpointError(f"checkpoint looks like {name}, which is not a registered model")
    return name


def _attention_width(state: Mapping[str, torch.Tensor]) -> int:
    """Number of 3x3 conv layers in the attention head (ISPL's ``width``), 0 for the plain 1x1 conv."""
    convs = {m.group(1) for k in state if (m := re.search(r"attconv\.conv(\d+)\.weight$", k))}
    return len(convs)


# ---------------------------------------------------------------------------------------------------------------
# One string -> a model
# ---------------------------------------------------------------------------------------------------------------


def resolve_model(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[str, StateDict | None]:
    """Turn a user's model spec (aletheia.models.spec) into (registry name, weights or None).

    A registered architecture has no weights (the builder's own initialisation); published weights are downloaded
    and verified on first use; a checkpoint's architecture is the one stored with it, else inferred from its keys.
    """
    resolved = resolve_model_spec(spec, cache_dir=cache_dir)
    if resolved.kind == "registered":
        return resolved.name, None
    if resolved.kind == "published":
        entry = PUBLISHED_WEIGHTS[resolved.name]
        if entry.architecture not in list_models():
            raise UnsupportedArchitectureError(
                f"{spec}: the {entry.architecture} architecture is not supported yet"
            )
        path = download_weights(resolved.name, cache_dir=cache_dir, base_url=base_url, progress=progress)
        return entry.architecture, load_state_dict_file(path)
    if resolved.checkpoint is None:
        raise CheckpointError(
            f"{resolved.onnx}: an exported model without its checkpoint has no torch weights"
        )
    state, metadata = read_checkpoint(resolved.checkpoint)
    return metadata.get("architecture") or infer_architecture(state), state


def model_from_state_dict(name: str, state: StateDict, source: str = "<state dict>") -> nn.Module:
    """Build the registered architecture `name` and load `state` into it strictly; eval mode, `model.config` set.

    The attention width is read from the keys; Lite models skip their ImageNet initialisation (about to be
    overwritten)."""
    kwargs: dict[str, object] = {}
    if get_config(name).has_attention:
        kwargs["width"] = _attention_width(state)
    if "Lite" in name:
        kwargs["pretrained"] = False
    model = create_model(name, **kwargs)
    load_checkpoint(model, state, source=source)
    return model.eval()


def load_model(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> nn.Module:
    """``resolve_model`` + ``model_from_state_dict``; a bare registry name gives the builder's initialisation."""
    name, state = resolve_model(spec, cache_dir=cache_dir, base_url=base_url, progress=progress)
    if state is None:
        return create_model(name).eval()
    return model_from_state_dict(name, state, source=spec)
