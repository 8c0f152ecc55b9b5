"""Safe loading of images into RGB uint8 arrays.

Every way an input can be bad (missing, empty, truncated, corrupt, not an image, too large, odd colour mode)
ends in one exception type, `InputError`, whose message names the input and says what was wrong.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Larger than any camera sensor in common use; beyond it an input is more likely a decompression bomb than a photo.
MAX_IMAGE_PIXELS = 250_000_000

ImageInput = str | Path | bytes | np.ndarray | Image.Image


class InputError(ValueError):
    """An input that cannot be used, with a message that says which input and why."""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _open_pil(source: str | Path | bytes) -> Image.Image:
    name = _describe(source)
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{name}: the upload is empty")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{name}: no such file")
        if path.is_dir():
            raise InputError(f"{name}: is a folder, not an image")
        if path.stat().st_size == 0:
            raise InputError(f"{name}: the file is empty")
        stream = path
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between MAX/2 and MAX pixels; treat both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{name}: image is {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}"
                )
            image.load()  # decode now, so truncation and corruption surface here and not later
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name}: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: corrupt or truncated image ({exc})") from exc
    return image


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> H x W x 3 uint8, respecting EXIF orientation; transparency is composited on white."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale the actual range to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if values.size else 0
        values = values / (65535.0 if peak > 255 else 255.0) * 255.0
        return np.repeat(np.clip(values, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise InputError(f"<array {array.shape}>: the array is empty")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"<array {array.shape}>: expected H x W, H x W x 1, H x W x 3 or H x W x 4")
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round()
    elif array.dtype.kind == "f":
        # Float images are taken as 0..1 when they fit there, else as 0..255.
        array = array * 255.0 if array.max(initial=0.0) <= 1.0 else array
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def load_image(source: ImageInput) -> np.ndarray:
    """Load a path, encoded bytes, PIL image or array as an H x W x 3 RGB uint8 array.

    Arrays are taken as RGB(A) already. Raises `InputError` for anything unusable.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        width, height = source.size
        if width * height == 0:
            raise InputError("<PIL.Image>: the image is empty")
        return _pil_to_rgb(source)
    if isinstance(source, (str, Path, bytes)):
        image = _open_pil(source)
        try:
            return _pil_to_rgb(image)
        except (OSError, ValueError) as exc:
            raise InputError(f"{_describe(source)}: cannot convert to RGB ({exc})") from exc
    raise InputError(f"{_describe(source)}: unsupported input type; give a path, bytes, PIL image or array")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def iter_input_files(paths: list[str | Path], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Expand files and folders (recursively, sorted) into the files to process.

    Files named explicitly are always kept, whatever their extension, so that a bad one gets reported rather than
    silently skipped; inside folders only files with a known extension are taken.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions))
        else:
            files.append(path)
    return files
