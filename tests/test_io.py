"""Image loading: every odd or bad input either becomes RGB uint8 or one clear InputError naming the input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aletheia.io import InputError, iter_input_files, load_image


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=2).astype(np.uint8)


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    array = _gradient()
    loaded = load_image(_save(Image.fromarray(array), tmp_path / "a.png"))
    assert loaded.dtype == np.uint8 and loaded.shape == (40, 60, 3)
    np.testing.assert_array_equal(loaded, array)


def test_bytes_and_pil_inputs_agree_with_path(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_gradient()), tmp_path / "a.png")
    from_path = load_image(path)
    np.testing.assert_array_equal(load_image(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_image(Image.open(path)), from_path)
    np.testing.assert_array_equal(load_image(str(path)), from_path)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "I;16", "LA", "RGBA", "P"])
def test_colour_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    image = Image.fromarray(_gradient()).convert(mode if mode != "I;16" else "L")
    grey = np.asarray(image.convert("L"))
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
    suffix = "tiff" if mode == "CMYK" else "png"
    loaded = load_image(_save(image, tmp_path / f"img.{suffix}"))
    assert loaded.shape == (40, 60, 3) and loaded.dtype == np.uint8
    if mode == "I;16":
        # 16-bit values are scaled to 8 bits, not clipped at 255.
        np.testing.assert_allclose(loaded[..., 0], grey, atol=1)


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 5:, 3] = 255  # left half transparent
    loaded = load_image(_save(Image.fromarray(rgba), tmp_path / "t.png"))
    np.testing.assert_array_equal(loaded[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(loaded[0, 9], [255, 0, 0])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(_gradient(40, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(_save(image, tmp_path / "o.jpg", exif=exif, quality=95))
    assert loaded.shape == (60, 40, 3)


@pytest.mark.parametrize(
    "array, shape",
    [
        (np.zeros((5, 6), dtype=np.uint8), (5, 6, 3)),
        (np.ones((5, 6, 1), dtype=np.float32), (5, 6, 3)),
        (np.full((5, 6, 3), 65535, dtype=np.uint16), (5, 6, 3)),
        (np.zeros((5, 6, 4), dtype=np.uint8), (5, 6, 3)),
    ],
)
def test_arrays(array: np.ndarray, shape: tuple[int, ...]) -> None:
    loaded = load_image(array)
    assert loaded.shape == shape and loaded.dtype == np.uint8


def test_float_array_in_unit_range_is_scaled() -> None:
    assert load_image(np.ones((2, 2, 3), dtype=np.float32)).max() == 255


def _png_with_claimed_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims a huge size: what a decompression bomb looks like from outside."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[object, str]]:
    good = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(good, format="JPEG", quality=90)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    (tmp_path / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    (tmp_path / "huge.png").write_bytes(_png_with_claimed_size(30000, 30000))
    (tmp_path / "folder.jpg").mkdir()
    return {
        "empty file": (tmp_path / "empty.jpg", "empty"),
        "text": (tmp_path / "text.jpg", "not a recognised image"),
        "truncated": (tmp_path / "truncated.jpg", "truncated"),
        "corrupt": (tmp_path / "corrupt.png", "image"),
        "huge": (tmp_path / "huge.png", "too large"),
        "missing": (tmp_path / "missing.jpg", "no such file"),
        "folder": (tmp_path / "folder.jpg", "folder"),
        "empty bytes": (b"", "empty"),
        "wrong type": (12345, "unsupported input type"),
        "bad array": (np.zeros((4, 4, 7), dtype=np.uint8), "expected"),
        "empty array": (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty file",
        "text",
        "truncated",
        "corrupt",
        "huge",
        "missing",
        "folder",
        "empty bytes",
        "wrong type",
        "bad array",
        "empty array",
    ],
)
def test_bad_inputs_raise_one_clear_error(tmp_path: Path, case: str) -> None:
    source, message = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match=message) as info:
        load_image(source)
    if isinstance(source, Path):
        assert str(source) in str(info.value)  # the message says which input


def test_iter_input_files_recurses_folders_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/1.jpg", "a/b/2.PNG", "a/notes.txt", "c.txt"]:
        (tmp_path / name).write_bytes(b"x")
    files = iter_input_files([tmp_path / "a", tmp_path / "c.txt"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/1.jpg", "a/b/2.PNG", "c.txt"]
