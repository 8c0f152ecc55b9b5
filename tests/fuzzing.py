"""Seeded mutants of every image format PIL reads here, and odd videos, for the fuzz test and
benchmarks/fuzz_inputs.py. Each input must decode or raise InputError: never any other exception."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, features

Mutator = Callable[[bytes, np.random.Generator], bytes]


def _picture(height: int = 40, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 40, (height, width))
    return np.stack([x * 5 + noise, y * 6, (x + y) * 3 + noise], axis=2).clip(0, 255).astype(np.uint8)


def seed_images() -> dict[str, bytes]:
    """One small valid file per format and variant (name -> bytes)."""
    rgb = Image.fromarray(_picture())
    variants: dict[str, tuple[Image.Image, str, dict]] = {
        "jpeg": (rgb, "JPEG", {"quality": 85}),
        "jpeg-progressive": (rgb, "JPEG", {"progressive": True}),
        "jpeg-cmyk": (rgb.convert("CMYK"), "JPEG", {}),
        "png": (rgb, "PNG", {}),
        "png-rgba": (rgb.convert("RGBA"), "PNG", {}),
        "png-palette": (rgb.convert("P"), "PNG", {"transparency": 0}),
        "png-16bit": (Image.fromarray(_picture()[..., 0].astype(np.uint16) * 257), "PNG", {}),
        "png-interlaced": (rgb, "PNG", {"interlace": 1}),
        "gif": (rgb.convert("P"), "GIF", {}),
        "bmp": (rgb, "BMP", {}),
        "bmp-rle": (rgb.convert("P"), "BMP", {"compression": "rle8"}),
        "webp": (rgb, "WEBP", {}),
        "webp-lossless": (rgb.convert("RGBA"), "WEBP", {"lossless": True}),
        "tiff": (rgb, "TIFF", {}),
        "tiff-lzw": (rgb, "TIFF", {"compression": "tiff_lzw"}),
        "tiff-float": (Image.fromarray(_picture()[..., 0].astype(np.float32) / 255), "TIFF", {}),
        "tiff-int32": (Image.fromarray(_picture()[..., 0].astype(np.int32) * 65536), "TIFF", {}),
        "qoi": (rgb, "QOI", {}),
        "ppm": (rgb, "PPM", {}),
        "tga": (rgb, "TGA", {}),
        "ico": (rgb, "ICO", {}),
        "pcx": (rgb, "PCX", {}),
        "sgi": (rgb, "SGI", {}),
        "dds": (rgb.convert("RGBA"), "DDS", {}),
    }
    if features.check("avif"):
        variants["avif"] = (rgb, "AVIF", {})
    if features.check("jpg_2000"):
        variants["jpeg2000"] = (rgb, "JPEG2000", {})
    seeds = {}
    for name, (image, fmt, options) in variants.items():
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt, **options)
        except (OSError, KeyError, ValueError):  # a format this PIL build cannot write
            continue
        seeds[name] = buffer.getvalue()
    return seeds


# -- mutators: each takes the bytes and a generator, and returns a new byte string -----------------------------------


def flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(0, len(out)))
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def set_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        out[int(rng.integers(0, len(out)))] = int(
            rng.choice([0, 0xFF, 0x7F, 0x80, int(rng.integers(0, 256))])
        )
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def extreme_integers(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite a 2- or 4-byte field near the start (where headers keep sizes and offsets) with an extreme value."""
    out = bytearray(data)
    width = int(rng.choice([2, 4]))
    position = int(rng.integers(0, max(1, min(len(out), 256) - width)))
    value = int(rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 40000, 65535 * 2]))
    packed = struct.pack(
        rng.choice(["<", ">"]) + ("H" if width == 2 else "I"), value & ((1 << 8 * width) - 1)
    )
    out[position : position + width] = packed
    return bytes(out)


def insert_junk(data: bytes, rng: np.random.Generator) -> bytes:
    position = int(rng.integers(0, len(data) + 1))
    junk = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return data[:position] + junk + data[position:]


def delete_span(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(0, len(data)))
    return data[:start] + data[start + int(rng.integers(1, 64)) :]


def repeat_span(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(0, len(data)))
    span = data[start : start + int(rng.integers(1, 256))]
    return data[:start] + span * int(rng.integers(2, 20)) + data[start:]


MUTATORS: tuple[Mutator, ...] = (
    flip_bits,
    set_bytes,
    truncate,
    extreme_integers,
    insert_junk,
    delete_span,
    repeat_span,
)


def mutants(seed: bytes, count: int, rng: np.random.Generator) -> Iterator[bytes]:
    """`count` mutants of one file, each made by one to three mutators in a row."""
    for _ in range(count):
        data = seed
        for _ in range(int(rng.integers(1, 4))):
            if data:
                data = MUTATORS[int(rng.integers(0, len(MUTATORS)))](data, rng)
        yield data


# -- odd videos ------------------------------------------------------------------------------------------------------

# (suffix, container format, codec, pixel format)
VIDEO_KINDS = (
    (".mp4", "mp4", "libx264", "yuv420p"),
    (".mov", "mov", "mpeg4", "yuv420p"),
    (".mkv", "matroska", "libx264", "yuv444p"),
    (".webm", "webm", "libvpx-vp9", "yuv420p"),
    (".avi", "avi", "mjpeg", "yuvj420p"),
    (".avi", "avi", "mpeg4", "yuv420p"),
    (".h264", "h264", "libx264", "yuv420p"),
)


def write_video(
    path: Path, fmt: str, codec: str, pix_fmt: str, frames: int, size: tuple[int, int], rate: int
) -> Path:
    import av

    width, height = size
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for number in range(frames):
            image = np.full((height, width, 3), (number * 37) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def odd_videos(folder: Path, count: int, rng: np.random.Generator) -> Iterator[Path]:
    """`count` videos: odd sizes, lengths and rates in every container, then truncated or mutated."""
    made = 0
    while made < count:
        suffix, fmt, codec, pix_fmt = VIDEO_KINDS[int(rng.integers(0, len(VIDEO_KINDS)))]
        size = (int(rng.choice([2, 16, 64, 96, 322])), int(rng.choice([2, 16, 48, 72, 180])))
        frames = int(rng.choice([1, 2, 5, 12]))
        rate = int(rng.choice([1, 5, 24, 120]))
        path = folder / f"v{made:04d}{suffix}"
        try:
            write_video(path, fmt, codec, pix_fmt, frames, size, rate)
        except Exception:  # an encoder refusing a size: not what is being tested
            path.unlink(missing_ok=True)
            continue
        data = path.read_bytes()
        damage = int(rng.integers(0, 4))
        if damage == 1:
            data = truncate(data, rng)
        elif damage == 2:
            data = next(mutants(data, 1, rng))
        elif damage == 3 and suffix == ".avi":
            data = data.replace(b"MJPG", b"XQZW").replace(b"FMP4", b"XQZW")
        path.write_bytes(data)
        made += 1
        yield path


def check_image(data: bytes, max_decode_pixels: int | None) -> str:
    """'ok' or 'input_error' for one input; any other exception propagates (that is the failure looked for)."""
    from aletheia.io import InputError, load_image_within

    try:
        image, _ = load_image_within(data, max_decode_pixels)
    except InputError:
        return "input_error"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
    return "ok"


def check_video(path: Path, frames: int = 8) -> str:
    from aletheia.io import InputError
    from aletheia.video import VideoReader

    try:
        with VideoReader(path) as reader:
            sampled = list(reader.frames(reader.sample_times(frames)))
    except InputError:
        return "input_error"
    assert sampled and all(f.image.dtype == np.uint8 and f.image.shape[2] == 3 for f in sampled)
    return "ok"
