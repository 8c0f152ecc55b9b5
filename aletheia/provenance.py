"""What a result records about where it came from (tool version, model and input hashes, time), and the facts about
an input file that its pixels no longer tell (its SHA-256, its JPEG quality).

A path or encoded bytes are hashed as they are on disk or as uploaded, so the hash matches `sha256sum FILE`; an
in-memory image (a PIL image or an array) has no file, so its RGB pixels (with their shape) are hashed instead.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20

# The IJG (libjpeg) luminance table at quality 50, in natural (row by row) order as PIL reports tables. libjpeg
# scales it by quality, so the quality whose scaled table is nearest a file's own is the quality it was saved at.
_IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)  # fmt: skip
_QUALITIES = np.arange(1, 101)
_SCALES = np.where(_QUALITIES < 50, 5000.0 / _QUALITIES, 200.0 - 2.0 * _QUALITIES)
_TABLES = np.clip(np.floor((_IJG_LUMINANCE[None, :] * _SCALES[:, None] + 50) / 100), 1, 255)


@dataclass(frozen=True)
class InputFacts:
    """Facts about an input file: its SHA-256 and, for a JPEG, the quality it was last saved at (else None)."""

    sha256: str | None = None
    jpeg_quality: int | None = None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_facts(source: object) -> InputFacts:
    """The facts of a path, encoded bytes, PIL image or array; unreadable files give empty facts (the loader that
    follows reports why)."""
    from PIL import Image

    if isinstance(source, (str, Path, bytes)):
        digest = None
        try:
            if isinstance(source, bytes):
                digest, stream = hashlib.sha256(source).hexdigest(), io.BytesIO(source)
            elif not Path(
                source
            ).is_file():  # a folder, a missing file, a FIFO (never opened: it could block)
                return InputFacts()
            else:
                digest, stream = sha256_file(source), source
            with Image.open(stream) as image:
                return InputFacts(digest, jpeg_quality(image))
        except Exception:  # unreadable, or not an image PIL knows: the loader that follows says why
            return InputFacts(digest)
    if hasattr(source, "read") and hasattr(source, "seek"):  # an open binary file: hashed, then rewound
        try:
            start, digest = source.tell(), hashlib.sha256()
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
            source.seek(start)
            return InputFacts(digest.hexdigest())
        except (OSError, ValueError):  # not seekable after all, or closed: the reader says why
            return InputFacts()
    if isinstance(source, Image.Image):
        source = np.asarray(source.convert("RGB"))
    if isinstance(source, np.ndarray):
        digest = hashlib.sha256(repr(source.shape).encode())
        digest.update(memoryview(np.ascontiguousarray(source)).cast("B"))  # the pixels in place, not a copy
        return InputFacts(digest.hexdigest())
    return InputFacts()


def jpeg_quality(image: Any) -> int | None:
    """The IJG quality (1-100) a JPEG's luminance table corresponds to, None for other formats. Encoders other than
    libjpeg use tables of their own; the estimate then says how coarse the table is on the same scale."""
    tables = getattr(image, "quantization", None)
    if image.format != "JPEG" or not tables or 0 not in tables:
        return None
    table = np.asarray(tables[0], dtype=np.float64)
    if table.size != 64:
        return None
    return int(_QUALITIES[np.argmin(np.abs(_TABLES - table[None, :]).sum(axis=1))])


@dataclass(frozen=True)
class Provenance:
    """Enough to tell later which tool, model and file gave a result, and when."""

    aletheia_version: str
    model_sha256: str | None
    input_sha256: str | None
    created: str  # UTC, ISO 8601

    @classmethod
    def now(cls, model_sha256: str | None, input_sha256: str | None) -> Provenance:
        from aletheia import __version__

        return cls(__version__, model_sha256, input_sha256, utc_now())

    def to_json(self) -> dict[str, Any]:
        return {"aletheia_version": self.aletheia_version, "model_sha256": self.model_sha256,
                "input_sha256": self.input_sha256, "created": self.created}  # fmt: skip


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
