"""Loading, recognising and downloading classifier checkpoints.

* ``load_state_dict_file`` / ``load_checkpoint``: safe (``weights_only``) loading of bare state dicts or trainer
  checkpoints, strict matching with errors that name the offending keys and file.
* ``infer_architecture``: which registered model a state dict belongs to, from its keys and shapes.
* ``PUBLISHED_WEIGHTS`` / ``download_weights``: ISPL's ICPR 2020 checkpoints, fetched only when a user asks,
  verified against the SHA-256 that their URLs embed, cached, never trusted unverified.
* ``resolve_model``: one string (registry name, published-weights name or file path) -> architecture + weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .registry import UnknownModelError, create_model, get_config, list_models

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


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class UnsupportedArchitectureError(CheckpointError):
    """A recognised checkpoint for an architecture this package does not implement (yet)."""


class WeightsDownloadError(OSError):
    """Weights could not be downloaded (HTTP error, no network, bad URL)."""


class ChecksumError(WeightsDownloadError):
    """A downloaded or cached file's SHA-256 is not the expected one; the file has been deleted."""

    def __init__(self, source: str, expected: str, got: str) -> None:
        super().__init__(
            f"SHA-256 mismatch for {source}: expected {expected}, got {got}; the file was deleted"
        )
        self.expected = expected
        self.got = got


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
METADATA_KEYS = ("architecture", "threshold", "temperature", "crop_margin", "model_card")


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
_BACKBONES: dict[tuple[int, int], str] = {(32, 1792): "B4", (16, 1280): "Lite0"}
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
# Published weights
# ---------------------------------------------------------------------------------------------------------------

# The files moved from their first host to this one; ISPL's code points here now.
ISPL_BASE_URL = "https://f002.backblazeb2.com/file/icpr2020/"
_ISPL_LICENCE = (
    "Published by ISPL, Politecnico di Milano, with the GPL-3.0 icpr2020dfdc code; no separate licence is stated "
    "for the weights, and the training data's own terms apply ({data}). Not bundled: downloaded on request. "
    "Cite Bonettini et al., 'Video Face Manipulation Detection Through Ensemble of CNNs', ICPR 2020."
)
_DATASETS = {
    "DFDC": "DFDC (Deepfake Detection Challenge) training set",
    "FFPP": "FaceForensics++ (c23)",
}


@dataclass(frozen=True)
class PublishedWeights:
    name: str
    architecture: str
    filename: str
    sha256: str
    dataset: str
    licence: str

    @property
    def url(self) -> str:
        return ISPL_BASE_URL + self.filename

    @property
    def loadable(self) -> bool:
        """Whether this package implements the architecture (ISPL's Xception it does not, yet)."""
        return self.architecture in list_models()


def _ispl(architecture: str, dataset: str, sha256: str) -> PublishedWeights:
    name = f"{architecture}_{dataset}"
    return PublishedWeights(
        name=name,
        architecture=architecture,
        filename=f"{name}_bestval-{sha256}.pth",  # the SHA-256 is part of the published file name
        sha256=sha256,
        dataset=_DATASETS[dataset],
        licence=_ISPL_LICENCE.format(data=_DATASETS[dataset]),
    )


# (architecture, training set, SHA-256 of the file), as published with ISPL's architectures/weights.py.
_ISPL_CHECKPOINTS = [
    ("EfficientNetB4", "DFDC", "c9f3663e2116d3356d056a0ce6453e0fc412a8df68ebd0902f07104d9129a09a"),
    ("EfficientNetB4", "FFPP", "93aaad84946829e793d1a67ed7e0309b535e2f2395acb4f8d16b92c0616ba8d7"),
    ("EfficientNetB4ST", "DFDC", "86f0a0701b18694dfb5e7837bd09fa8e48a5146c193227edccf59f1b038181c6"),
    ("EfficientNetB4ST", "FFPP", "ccd016668071be5bf5fff68e446d055441739ec7113fb1a6eee998f08396ae92"),
    ("EfficientNetAutoAttB4", "DFDC", "72ed969b2a395fffe11a0d5bf0a635e7260ba2588c28683630d97ff7153389fc"),
    ("EfficientNetAutoAttB4", "FFPP", "b0c9e9522a7143cf119843e910234be5e30f77dc527b1b427cdffa5ce3bdbc25"),
    ("EfficientNetAutoAttB4ST", "DFDC", "4df0ef7d2f380a5955affa78c35d0942ac1cd65229510353b252737775515a33"),
    ("EfficientNetAutoAttB4ST", "FFPP", "ddb357503b9b902e1b925c2550415604c4252b9b9ecafeb7369dc58cc16e9edd"),
    ("Xception", "DFDC", "e826cdb64d73ef491e6b8ff8fce0e1e1b7fc1d8e2715bc51a56280fff17596f9"),
    ("Xception", "FFPP", "bb119e4913cb8f816cd28a03f81f4c603d6351bf8e3f8e3eb99eebc923aecd22"),
]
PUBLISHED_WEIGHTS: dict[str, PublishedWeights] = {
    w.name: w for w in (_ispl(*row) for row in _ISPL_CHECKPOINTS)
}

# torch.hub's convention: "name-<hex digest or prefix>.ext".
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$ALETHEIA_CACHE`` if set, else ``~/.cache/aletheia/weights``."""
    env = os.environ.get("ALETHEIA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aletheia" / "weights"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_matches(expected: str, got: str) -> bool:
    # A prefix (as torch.hub file names carry) is accepted; the full digest is preferred.
    return got.startswith(expected.lower())


def download_weights(
    name_or_url: str,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of verified weights in the cache, downloading them first if needed.

    ``name_or_url`` is a ``PUBLISHED_WEIGHTS`` name or an http(s) URL. The SHA-256 comes from ``expected_sha256``,
    else the table, else the URL's file name (``name-<hex>.pth``); with none of these the download is refused.
    ``base_url`` replaces ISPL's server for published names (mirrors, tests).
    """
    if name_or_url in PUBLISHED_WEIGHTS:
        entry = PUBLISHED_WEIGHTS[name_or_url]
        filename = entry.filename
        url = (base_url.rstrip("/") + "/" + filename) if base_url else entry.url
        expected = expected_sha256 or entry.sha256
    elif urllib.parse.urlsplit(name_or_url).scheme in ("http", "https"):
        url = name_or_url
        filename = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        if not filename:
            raise ValueError(f"cannot tell a file name from the URL {url!r}")
        embedded = _HASH_IN_NAME.search(filename)
        expected = expected_sha256 or (embedded.group(1) if embedded else None)
        if expected is None:
            raise ValueError(
                f"no SHA-256 known for {url}: pass expected_sha256 (unverified weights are not loaded)"
            )
    else:
        raise ValueError(
            f"{name_or_url!r} is neither a published weights name ({', '.join(PUBLISHED_WEIGHTS)}) nor an http(s) URL"
        )
    expected = expected.lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", expected):
        raise ValueError(f"expected_sha256 must be 8 to 64 hex digits, got {expected!r}")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / filename
    if target.is_file():
        if _hash_matches(expected, _sha256_file(target)):
            return target
        target.unlink()  # corrupt or replaced: fetch again rather than trust it

    _fetch(url, target, expected, progress)
    return target


def _fetch(url: str, target: Path, expected: str, progress: bool) -> None:
    """Stream ``url`` into a temporary file next to ``target``, verify it, then rename it into place atomically."""
    from tqdm.auto import tqdm

    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (scheme checked by the caller)
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsDownloadError(
            f"cannot download {url}: {reason}. Without network access, put the file at {target} yourself."
        ) from exc

    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            response,
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        got = digest.hexdigest()
        if not _hash_matches(expected, got):
            raise ChecksumError(url, expected, got)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# One string -> a model
# ---------------------------------------------------------------------------------------------------------------


def resolve_model(
    spec: str,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[str, StateDict | None]:
    """Turn a user's model string into (registry name, weights or None).

    ``spec`` is, in this order: a registry name (no weights: the builder's own initialisation), a
    ``PUBLISHED_WEIGHTS`` name (downloaded and verified on first use), or a path to a checkpoint file (the
    architecture is inferred from its keys).
    """
    try:
        return get_config(spec).name, None
    except UnknownModelError:
        pass
    if spec in PUBLISHED_WEIGHTS:
        entry = PUBLISHED_WEIGHTS[spec]
        if entry.architecture not in list_models():
            raise UnsupportedArchitectureError(
                f"{spec}: the {entry.architecture} architecture is not supported yet"
            )
        path = download_weights(spec, cache_dir=cache_dir, base_url=base_url, progress=progress)
        return entry.architecture, load_state_dict_file(path)
    path = Path(spec).expanduser()
    if path.is_file():
        state = load_state_dict_file(path)
        return infer_architecture(state), state
    raise ValueError(
        f"{spec!r} is not a registered model ({', '.join(list_models())}), a published weights name "
        f"({', '.join(PUBLISHED_WEIGHTS)}), or an existing checkpoint file"
    )


def cached_weights_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `download_weights` keeps a published checkpoint (it may not be there yet)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / PUBLISHED_WEIGHTS[name].filename


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
