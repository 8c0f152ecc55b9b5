"""Hostile and odd inputs: whatever a decoder raises is that input's InputError, a batch reports every input (the
unreadable ones included) and goes on, images decode under a memory budget, and odd pixel formats decode right."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from aletheia.cli import main
from aletheia.io import InputError, TooLargeError, load_image, load_image_within, scan_inputs
from aletheia.video import VideoReader

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"


def _encoded(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _noise(h: int = 64, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3)).astype(np.uint8)


def _pil_raises(data: bytes) -> type[BaseException] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:
        return type(exc)
    return None


def truncated_qoi() -> bytes:
    """A QOI header and nothing else: PIL's QOI decoder raises IndexError on it."""
    return _encoded(_noise(), "QOI")[:14]


def corrupt_avif() -> bytes:
    """An AVIF whose coded data is damaged: PIL's AVIF decoder raises RuntimeError on it."""
    data, rng = _encoded(_noise(), "AVIF"), np.random.default_rng(1)
    for _ in range(500):
        mutant = bytearray(data)
        for _ in range(3):
            mutant[rng.integers(0, len(mutant))] = rng.integers(0, 256)
        if _pil_raises(bytes(mutant)) is RuntimeError:
            return bytes(mutant)
    raise AssertionError("no RuntimeError among the AVIF mutants")


def unknown_codec_avi(path: Path) -> Path:
    """A valid AVI whose video codec tag names no decoder (PyAV gives the stream no codec context)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for number in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), number * 60, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(buffer.getvalue().replace(b"MJPG", b"XQZW"))
    return path


# -- every decoder error is an InputError ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, raw_error",
    [(truncated_qoi, IndexError), (corrupt_avif, RuntimeError)],
    ids=["truncated QOI", "corrupt AVIF"],
)
def test_any_decoder_error_is_an_input_error(make, raw_error: type) -> None:
    data = make()
    assert _pil_raises(data) is raw_error, "the decoder itself raises something other than OSError"
    with pytest.raises(InputError, match="corrupt or truncated image"):
        load_image(data)


def test_a_video_without_a_decoder_for_its_codec_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no decoder for its video codec"):
        VideoReader(unknown_codec_avi(tmp_path / "odd.avi"))


def test_a_raw_h264_stream_is_sampled_over_its_length(tmp_path: Path) -> None:
    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for number in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), number * 8, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with VideoReader(path) as reader:
        assert reader.info.frame_count == 30, "every packet of a raw stream is a frame"
        frames = list(reader.frames(reader.sample_times(8)))
    assert len(frames) == 8 and frames[-1].image.mean() > 200, (
        "sampled up to the last frame, not only the first"
    )


def test_sampling_never_lists_more_times_than_frames(tmp_path: Path) -> None:
    from tests.test_video import numbered_video

    with VideoReader(numbered_video(tmp_path / "n.mp4", count=20, fps=10)) as reader:
        assert len(reader.sample_times(fps=1e9)) == 20 and len(reader.sample_times(10**9)) == 20


# -- unreadable files and folders ------------------------------------------------------------------------------------


def _without_root_powers(code: str) -> subprocess.CompletedProcess:
    """Run Python code where file permissions bind: as root, without the capabilities that override them."""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_permission_denied_is_reported_as_such(tmp_path: Path) -> None:
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(ASTRONAUT.read_bytes())
    locked.chmod(0)
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "inside.jpg").write_bytes(ASTRONAUT.read_bytes())
    closed.chmod(0)
    try:
        code = (
            "from aletheia.io import InputError, load_image\n"
            f"for path in [{str(locked)!r}, {str(closed / 'inside.jpg')!r}]:\n"
            "    try: load_image(path)\n"
            "    except InputError as exc: print(exc)\n"
        )
        out = _without_root_powers(code)
    finally:
        closed.chmod(0o755)
    assert out.stdout.splitlines() == [
        f"{locked}: permission denied",
        f"{closed / 'inside.jpg'}: permission denied",
    ], out.stderr


def test_a_folder_scan_reports_what_it_cannot_enter(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(b"x")
    (photos / "sub" / "b.png").write_bytes(b"x")
    (photos / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    (photos / "loop.jpg").symlink_to(photos / "loop.jpg")
    (photos / "back").symlink_to(photos)  # followed, it would walk photos/back/back/... for ever
    (photos / "notes.txt").write_text("not an input")
    found = {item.path.relative_to(tmp_path).as_posix(): item.problem for item in scan_inputs([photos])}
    assert list(found) == [
        "photos/a.jpg",
        "photos/back",
        "photos/broken.jpg",
        "photos/loop.jpg",
        "photos/sub/b.png",
    ]
    assert found["photos/a.jpg"] is None and found["photos/sub/b.png"] is None
    assert "broken symbolic link" in found["photos/broken.jpg"]
    assert "symbolic link loop" in found["photos/loop.jpg"]
    assert "already scanned" in found["photos/back"]


def test_an_unreadable_subfolder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(b"x")
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "b.jpg").write_bytes(b"x")
    (tmp_path / "closed").chmod(0)
    try:
        code = (
            "from aletheia.io import scan_inputs\n"
            f"for item in scan_inputs([{str(tmp_path)!r}]): print(item.path.name, item.problem)\n"
        )
        out = _without_root_powers(code)
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert out.stdout.splitlines() == [
        f"closed {tmp_path / 'closed'}: permission denied, cannot list this folder",
        "a.jpg None",
    ], out.stderr


def test_a_fifo_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        VideoReader(fifo)


# -- the command line: every input gets a line -----------------------------------------------------------------------


def test_a_batch_reports_each_bad_file_and_carries_on(b4_checkpoint: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(ASTRONAUT.read_bytes())
    (folder / "b_cut.jpg").write_bytes(truncated_qoi())  # IndexError inside PIL
    (folder / "c.avif").write_bytes(corrupt_avif())  # RuntimeError inside PIL
    unknown_codec_avi(folder / "d.avi")  # AttributeError inside the video reader, before
    (folder / "e_broken.png").symlink_to(tmp_path / "gone.png")
    (folder / "f.jpg").write_bytes(ASTRONAUT.read_bytes())
    out = tmp_path / "out.jsonl"
    code = main(["detect", str(folder), "--model", str(b4_checkpoint), "-o", str(out), "--no-progress"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 1 and [Path(r["path"]).name for r in records] == [
        "a.jpg",
        "b_cut.jpg",
        "c.avif",
        "d.avi",
        "e_broken.png",
        "f.jpg",
    ]
    assert [r["error"] is None for r in records] == [True, False, False, False, False, True]
    assert records[3]["kind"] == "video" and "no decoder" in records[3]["error"]
    assert "broken symbolic link" in records[4]["error"]
    assert "4 of 6 inputs could not be processed" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_file_names_that_are_not_utf8(b4_checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 on disk: not UTF-8
    (folder / name).write_bytes(ASTRONAUT.read_bytes())
    (folder / os.fsdecode(b"\xff_cut.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / f"out.{fmt}"
    args = ["detect", str(folder), "--model", str(b4_checkpoint), "--format", fmt, "-o", str(out)]
    assert main([*args, "--no-progress"]) == 1
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [Path(r["path"]).name for r in rows] == ["caf\\xe9.jpg", "\\xff_cut.jpg"]
        assert rows[0]["error"] == "" and "\\xff_cut.jpg" in rows[1]["error"]
    else:
        assert "caf\\xe9.jpg" in text and "\\xff_cut.jpg" in text


@pytest.mark.parametrize(
    "flag, value", [("--fps", "1e9"), ("--fps", "nan"), ("--fps", "0"), ("--frames", "100000000")]
)
def test_video_sampling_is_bounded(flag: str, value: str, capsys) -> None:
    assert main(["detect", str(ASTRONAUT), flag, value]) == 2
    assert f"{flag} must be" in capsys.readouterr().err


# -- pixels: odd formats decode right, large ones within a budget ----------------------------------------------------


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    loaded = load_image(tmp_path / "f.tif")
    np.testing.assert_allclose(loaded[..., 0], ramp * 255, atol=1)


def test_32_bit_tiff_uses_its_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 2**31 - 1, 64 * 64).astype(np.int32).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "i.tif")
    loaded = load_image(tmp_path / "i.tif")
    np.testing.assert_allclose(loaded[..., 0], ramp / (2**31 - 1) * 255, atol=1)


def test_boolean_and_nan_arrays() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert load_image(mask)[0, 0].tolist() == [255, 255, 255] and load_image(mask)[3, 0].tolist() == [0, 0, 0]
    assert load_image(np.full((2, 2, 3), np.nan, np.float32)).max() == 0


def test_avif_is_a_photo_everywhere(tmp_path: Path) -> None:
    from aletheia.serving.service import is_video_upload
    from aletheia.video import is_video_path

    data = _encoded(_noise(), "AVIF")
    assert load_image(data).shape == (64, 64, 3) and not is_video_upload(data, "photo.avif")
    assert not is_video_path("photo.avif") and scan_inputs([tmp_path / "x.avif"])[0].path.suffix == ".avif"


def test_a_large_jpeg_decodes_reduced_and_other_formats_are_refused() -> None:
    photo = np.asarray(Image.open(ASTRONAUT).resize((3000, 2000)))
    image, scale = load_image_within(_encoded(photo, "JPEG"), 2_000_000)
    assert scale == 2 and image.shape == (1000, 1500, 3), "a quarter of the pixels, decoded that way"
    assert load_image_within(_encoded(photo, "JPEG"), None)[0].shape == (2000, 3000, 3)
    with pytest.raises(TooLargeError, match="3000x2000 pixels, above this server's decoding limit"):
        load_image_within(_encoded(photo, "PNG"), 2_000_000)
