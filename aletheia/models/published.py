"""Published weights: ISPL's ICPR 2020 checkpoints, fetched only when a user asks (`aletheia weights download`),
verified against the SHA-256 that their URLs embed, cached, never trusted unverified. Needs no torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ISPL_BASE_URL",
    "PUBLISHED_WEIGHTS",
    "ChecksumError",
    "PublishedWeights",
    "WeightsDownloadError",
    "cached_weights_path",
    "default_cache_dir",
    "download_weights",
]


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


# Published architectures this package has no implementation of (their weights are listed, never offered).
UNSUPPORTED_ARCHITECTURES = frozenset({"Xception"})


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
        return self.architecture not in UNSUPPORTED_ARCHITECTURES


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
    import urllib.error
    import urllib.request  # with http.client and email: 8 ms of every process's start, for downloads only

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


def cached_weights_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where `download_weights` keeps a published checkpoint (it may not be there yet)."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / PUBLISHED_WEIGHTS[name].filename
