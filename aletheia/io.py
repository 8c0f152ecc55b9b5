"""Safe loading of images into RGB uint8 arrays.

Every way an input can be bad (missing, unreadable, empty, truncated, corrupt, not an image, too large, odd colour
mode) ends in one exception type, `InputError`, whose message names the input and says what was wrong: whatever a
decoder raises (an IndexError in one, a RuntimeError in another) is that input's InputError, never a crash.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".avif"})
# Larger than any camera sensor in common use; beyond it an input is more likely a decompression bomb than a photo.
# (PIL's own bomb check refuses above ~89.5 million pixels first.)
MAX_IMAGE_PIXELS = 250_000_000

ImageInput = str | Path | bytes | np.ndarray | Image.Image


class InputError(ValueError):
    """An input that cannot be used, with a message that says which input and why."""


class TooLargeError(InputError):
    """An image with more pixels than may be decoded (the server answers 413)."""


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def check_input_file(path: Path, name: str, what: str = "an image") -> None:
    """Refuse, by name, what is not a readable regular file: missing, a broken or looping link, a folder, ..."""
    try:
        info = path.stat()
    except FileNotFoundError:
        missing = (
            "broken symbolic link (what it points to does not exist)" if path.is_symlink() else "no such file"
        )
        raise InputError(f"{name}: {missing}") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as exc:
        why = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot read it ({exc.strerror or exc})"
        raise InputError(f"{name}: {why}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: is a folder, not {what}")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise InputError(f"{name}: not a regular file")
    if info.st_size == 0:
        raise InputError(f"{name}: the file is empty")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class _Opened:
    image: Image.Image
    scale: float  # original size / decoded size: 1 unless a large JPEG is decoded reduced


def _open_pil(source: str | Path | bytes, max_decode_pixels: int | None = None) -> _Opened:
    name = _describe(source)
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{name}: the upload is empty")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        check_input_file(stream, name)
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between MAX/2 and MAX pixels; treat both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            scale = _plan_decode(image, name, max_decode_pixels)
            image.load()  # decode now, so truncation and corruption surface here and not later
    except InputError:
        raise
    except PermissionError as exc:
        raise InputError(f"{name}: permission denied") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLargeError(f"{name}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name}: not a recognised image format") from exc
    except MemoryError as exc:
        raise TooLargeError(f"{name}: not enough memory to decode this image") from exc
    except Exception as exc:  # any decoder's failure (OSError, IndexError in QOI, RuntimeError in AVIF, ...)
        raise InputError(f"{name}: corrupt or truncated image ({_reason(exc)})") from exc
    return _Opened(image, scale)


def _plan_decode(image: Image.Image, name: str, max_decode_pixels: int | None) -> float:
    """Refuse too many pixels; over `max_decode_pixels`, have a JPEG decode at 1/2, 1/4 or 1/8 size (libjpeg does
    this without ever holding the full image), and refuse other formats. Returns the size reduction."""
    width, height = image.size
    pixels = width * height
    if pixels > MAX_IMAGE_PIXELS:
        raise TooLargeError(
            f"{name}: image is {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,}"
        )
    if max_decode_pixels is None or pixels <= max_decode_pixels:
        return 1.0
    if image.format == "JPEG":
        factor = 2 ** min(3, math.ceil(math.log2(math.sqrt(pixels / max_decode_pixels))))
        image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        if image.size[0] * image.size[1] <= max_decode_pixels:
            return width / image.size[0]
    raise TooLargeError(
        f"{name}: image is {width}x{height} pixels, above this server's decoding limit of {max_decode_pixels:,} "
        "(JPEG photos up to 64 times larger are read at reduced size)"
    )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> H x W x 3 uint8, respecting EXIF orientation; transparency is composited on white."""
    # Without an orientation to apply, exif_transpose would only copy the image (5 ms for a 1080p photo).
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image) or image
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        return _grey_to_rgb(values)
    if image.mode == "I":
        # 32-bit integers (TIFF): 8- or 16-bit data by its range, else the full signed 32-bit range.
        values = np.asarray(image, dtype=np.float64)
        low, peak = (values.min(), values.max()) if values.size else (0, 0)
        if low >= 0 and peak <= 255:
            return _grey_to_rgb(values)
        if low >= 0 and peak <= 65535:
            return _grey_to_rgb(values / 257.0)
        return _grey_to_rgb(
            (values + (2.0**31 if low < 0 else 0.0)) / (2.0**32 - 1 if low < 0 else 2.0**31 - 1) * 255
        )
    if image.mode == "F":
        # Float images, like float arrays: 0..1 when they fit there, else 0..255.
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        return _grey_to_rgb(values * 255.0 if values.size and values.max() <= 1.0 else values)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    # One copy: an RGB image is not converted (that would copy it), and its bytes become a writable array in place.
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    return np.frombuffer(bytearray(rgb.tobytes()), dtype=np.uint8).reshape(height, width, 3)


def _grey_to_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(values.round(), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise InputError(f"<array {array.shape}>: the array is empty")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"<array {array.shape}>: expected H x W, H x W x 1, H x W x 3 or H x W x 4")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round()
    elif array.dtype.kind == "f":
        # Float images are taken as 0..1 when they fit there, else as 0..255; NaN is black.
        array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        array = array * 255.0 if array.max(initial=0.0) <= 1.0 else array
    elif array.dtype.kind not in "iu":
        raise InputError(f"<array {array.dtype}>: expected a numeric or boolean array")
    if array.dtype != np.uint8:  # uint8 is the common case: no clip, no copy
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
    return load_image_within(source, None)[0]


def load_image_within(source: ImageInput, max_decode_pixels: int | None) -> tuple[np.ndarray, float]:
    """`load_image` under a memory budget: (image, how many times smaller than the original it is).

    A JPEG with more than `max_decode_pixels` pixels is decoded at 1/2, 1/4 or 1/8 size (the factor returned),
    any other image over it is refused with TooLargeError. None: no budget, the factor is always 1.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source), 1.0
    if isinstance(source, Image.Image):
        width, height = source.size
        if width * height == 0:
            raise InputError("<PIL.Image>: the image is empty")
        return _to_rgb(source, "<PIL.Image>"), 1.0
    if isinstance(source, (str, Path, bytes)):
        opened = _open_pil(source, max_decode_pixels)
        return _to_rgb(opened.image, _describe(source)), opened.scale
    raise InputError(f"{_describe(source)}: unsupported input type; give a path, bytes, PIL image or array")


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
    try:
        return _pil_to_rgb(image)
    except MemoryError as exc:
        raise TooLargeError(f"{name}: not enough memory to convert this image") from exc
    except Exception as exc:  # an odd mode, a corrupt EXIF block, a plugin's own failure
        raise InputError(f"{name}: cannot convert to RGB ({_reason(exc)})") from exc


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ScannedInput:
    """An input found by `scan_inputs`; `problem` says why it could not even be scanned (then it is reported)."""

    path: Path
    problem: str | None = None


def scan_inputs(
    paths: list[str | Path],
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    on_other: Callable[[Path], None] | None = None,
) -> list[ScannedInput]:
    """Expand files and folders (recursively, sorted) into the inputs to process.

    Files named explicitly are always kept, whatever their extension (and even when missing), so that a bad one
    gets reported rather than silently skipped; inside folders the entries with a known extension are taken. What a
    walk cannot enter is kept too, with its problem: an unreadable folder, a broken or looping symbolic link, a link
    back to a folder already scanned (followed, it would loop). `walk_inputs` gives the same inputs one at a time;
    `on_other` is as there.
    """
    return list(walk_inputs(paths, extensions, on_other))


def walk_inputs(
    paths: Iterable[str | Path],
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    on_other: Callable[[Path], None] | None = None,
) -> Iterator[ScannedInput]:
    """`scan_inputs` lazily, in the same order: a folder of a million files is never held as a list of inputs.

    Folders are walked depth first with each folder's entries sorted by name (the order of sorting whole paths);
    only the names of the folder being walked, and of the folders above it, are held at once. `on_other` hears of
    each file inside a folder that is passed over for its extension (a document, say; hidden files aside), so that
    it can be reported.
    """
    for raw in paths:
        path = Path(raw)
        if _is_folder(path):
            yield from _walk(path, extensions, {_identity(path)}, on_other)
        else:
            yield ScannedInput(path)


def iter_input_files(paths: list[str | Path], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The paths of `scan_inputs`, problems included: loading one of those fails with its own InputError."""
    return [item.path for item in scan_inputs(paths, extensions)]


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _walk(
    folder: Path,
    extensions: frozenset[str],
    seen: set[tuple[int, int]],
    on_other: Callable[[Path], None] | None = None,
) -> Iterator[ScannedInput]:
    try:
        with os.scandir(folder) as scan:
            names = sorted(entry.name for entry in scan)  # names only: no stat results or paths held
    except PermissionError:
        yield ScannedInput(folder, f"{folder}: permission denied, cannot list this folder")
        return
    except OSError as exc:
        yield ScannedInput(folder, f"{folder}: cannot list this folder ({exc.strerror or exc})")
        return
    for name in names:
        path = folder / name
        known = path.suffix.lower() in extensions
        try:
            info = path.stat()  # follows links
        except OSError as exc:
            # Not followable: a broken or looping link, or an entry of a folder that can be listed but not entered.
            if known or not path.suffix:
                yield ScannedInput(path, _unreadable(path, exc))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in seen:
                yield ScannedInput(path, f"{path}: a symbolic link to a folder already scanned; not followed")
                continue
            seen.add((info.st_dev, info.st_ino))
            yield from _walk(path, extensions, seen, on_other)
        elif known:
            yield ScannedInput(path)
        elif on_other is not None and stat.S_ISREG(info.st_mode) and not name.startswith("."):
            on_other(path)  # hidden files (.DS_Store, .gitkeep) are not worth a line


def _unreadable(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"{path}: symbolic link loop"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied"
    if isinstance(exc, FileNotFoundError) and path.is_symlink():
        return f"{path}: broken symbolic link (what it points to does not exist)"
    return f"{path}: cannot read it ({exc.strerror or exc})"
