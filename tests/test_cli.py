"""The `aletheia` command: output formats, the exact JSON line, bad files in a batch, exit statuses."""

from __future__ import annotations

import csv
import http.server
import json
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import pytest

from aletheia.cli import main

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
ALETHEIA = Path(sys.executable).parent / "aletheia"
JSON_KEYS = ["path", "kind", "score", "label", "explanation", "threshold", "band", "tta", "model", "faces", "warnings",
             "error", "provenance"]  # fmt: skip
FACE_KEYS = ["box", "detection_score", "score", "label", "spread", "warnings", "keypoints"]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A folder with a good photo, a nested copy, a corrupt file and a text file that only looks like an image."""
    (tmp_path / "nested").mkdir()
    (tmp_path / "a.jpg").write_bytes(ASTRONAUT.read_bytes())
    (tmp_path / "nested" / "b.jpg").write_bytes(ASTRONAUT.read_bytes())
    (tmp_path / "c_truncated.jpg").write_bytes(ASTRONAUT.read_bytes()[:2000])
    (tmp_path / "d.png").write_text("hello")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_detect_jsonl_over_a_folder(folder: Path, b4_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "results.jsonl"
    code = main(["detect", str(folder), "--model", str(b4_checkpoint), "--output", str(out), "--no-progress"])
    assert code == 1  # two bad files
    records = _lines(out.read_text())
    assert [Path(r["path"]).name for r in records] == ["a.jpg", "c_truncated.jpg", "d.png", "b.jpg"]
    for record in records:
        assert list(record) == JSON_KEYS
        assert record["kind"] == "image" and record["model"] == b4_checkpoint.name
    good, truncated, text, nested = records
    assert (
        good["label"] in ("fake", "real", "inconclusive")
        and good["error"] is None
        and good["threshold"] == 0.5
    )
    assert len(good["faces"]) == 1 and list(good["faces"][0]) == FACE_KEYS
    assert len(good["faces"][0]["keypoints"]) == 6
    assert good["score"] == max(f["score"] for f in good["faces"])
    assert nested["score"] == good["score"]
    for bad in (truncated, text):
        assert bad["label"] == "error" and bad["score"] is None and bad["faces"] == [] and bad["error"]
    assert "truncated" in truncated["error"] and "not a recognised image" in text["error"]
    assert "2 of 4 inputs could not be processed" in capsys.readouterr().err


def test_detect_csv_table_threshold_and_assume_face(b4_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r.csv"
    assert (
        main(
            [
                "detect",
                str(ASTRONAUT),
                "--model",
                str(b4_checkpoint),
                "--format",
                "csv",
                "-o",
                str(out),
                "--threshold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    (row,) = list(csv.DictReader(out.open()))
    assert row["label"] == "fake" and row["n_faces"] == "1" and float(row["threshold"]) == 0.0
    assert (
        main(
            [
                "detect",
                str(ASTRONAUT),
                "--model",
                str(b4_checkpoint),
                "--format",
                "table",
                "--assume-face",
                "--threshold",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["label", "score", "manip.", "gen.", "faces", "path", "/", "warnings"]
    row = table[1].split()
    assert row[0] == "real" and row[2:5] == ["-", "-", "1"]  # a one-output model has no per-kind scores
    assert table[2].split()[:3] == ["face", "#1", "real"] and table[2].split()[4:6] == ["-", "-"]
    assert table[-1].startswith("0 of 1 inputs flagged fake, 0 inconclusive; 0 of 1 faces")


@pytest.mark.parametrize(
    "args, message",
    [
        (["detect", str(ASTRONAUT)], "no default model"),
        (["detect", str(ASTRONAUT), "--model", "EfficientNetAutoAttB4_DFDC"], "weights download"),
        (["detect", str(ASTRONAUT), "--model", "nosuch.pth"], "no such checkpoint"),
        (["detect", str(ASTRONAUT), "--model", "x.pth", "--threshold", "1.5"], "between 0 and 1"),
        (["detect", str(ASTRONAUT), "--model", "x.pth", "--device", "cuda"], "CUDA"),
        (["weights", "download", "NoSuchWeights"], "unknown weights"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    args: list[str], message: str, capsys, monkeypatch, tmp_path
) -> None:
    from aletheia.models import spec

    monkeypatch.setattr(spec, "DEFAULT_MODEL", tmp_path / "no-bundled-model.pth")  # as before one is trained
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_several_inputs_on_the_cpu_get_single_threaded_sessions(folder: Path) -> None:
    """A folder is scanned for throughput (a thread per core, aletheia.overlap); one input waits least with every
    core on each network call; elsewhere than on the CPU with ONNX Runtime the default stands."""
    from aletheia.cli import _session_threads

    assert _session_threads([str(folder)], "cpu", "auto") == 1
    assert _session_threads([str(ASTRONAUT), str(ASTRONAUT)], "cpu", "onnx") == 1
    assert _session_threads([str(ASTRONAUT)], "cpu", "auto") is None
    assert _session_threads([str(folder)], "cuda", "auto") is None
    assert _session_threads([str(folder)], "cpu", "torch") is None


def test_empty_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["detect", str(tmp_path), "--model", "x.pth"]) == 2
    assert "no image or video files" in capsys.readouterr().err


def test_weights_download_rejects_a_wrong_hash_from_a_local_server(tmp_path: Path, capsys) -> None:
    """`aletheia weights download NAME --base-url` against a real HTTP server serving a file that is not ISPL's."""
    from aletheia.models.checkpoints import PUBLISHED_WEIGHTS

    entry = PUBLISHED_WEIGHTS["EfficientNetAutoAttB4_DFDC"]
    served = tmp_path / "served"
    served.mkdir()
    (served / entry.filename).write_bytes(b"an impostor checkpoint")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cache = tmp_path / "cache"
        code = main(
            [
                "weights",
                "download",
                entry.name,
                "--cache-dir",
                str(cache),
                "--base-url",
                f"http://127.0.0.1:{server.server_port}",
            ]
        )
    finally:
        server.shutdown()
    assert code == 1
    err = capsys.readouterr().err
    assert "SHA-256" in err or "sha256" in err.lower()
    assert not any(cache.rglob("*.pth"))  # nothing unverified is left in the cache


def test_console_script_runs(b4_checkpoint: Path) -> None:
    """The installed `aletheia` entry point, as a user runs it."""
    proc = subprocess.run(
        [str(ALETHEIA), "detect", str(ASTRONAUT), "--model", str(b4_checkpoint), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (record,) = _lines(proc.stdout)
    assert record["label"] in ("fake", "real", "inconclusive") and len(record["faces"]) == 1
    listing = subprocess.run([str(ALETHEIA), "weights", "list"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "EfficientNetAutoAttB4_DFDC" in listing.stdout


def test_faces_command_writes_boxes_and_crops(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    code = main(["faces", str(ASTRONAUT), str(bad), "--crops", str(tmp_path / "crops"), "--no-progress"])
    assert code == 1
    good, broken = _lines(capsys.readouterr().out)
    assert len(good["faces"]) == 1 and "score" not in good["faces"][0]
    from aletheia.io import load_image

    assert load_image(good["faces"][0]["crop"]).shape == (224, 224, 3)
    assert broken["faces"] == [] and "bad.jpg" in broken["error"]


def test_serve_without_any_model_is_a_usage_error(capsys, monkeypatch, tmp_path) -> None:
    from aletheia.models import spec

    monkeypatch.setattr(spec, "DEFAULT_MODEL", tmp_path / "no-bundled-model.pth")
    assert main(["serve", "--port", "0"]) == 2
    assert "no default model" in capsys.readouterr().err


def test_detect_mixes_images_and_videos_and_plots_timelines(
    b4_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    from tests.test_video import _moving_astronaut, write_video

    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(ASTRONAUT.read_bytes())
    write_video(folder / "b.mp4", _moving_astronaut(), fps=6)
    (folder / "c.mp4").write_bytes(b"not a video at all")
    plots = tmp_path / "plots"
    code = main(["detect", str(folder), "--model", str(b4_checkpoint), "--frames", "4", "--plots", str(plots),
                 "--no-progress"])  # fmt: skip
    assert code == 1
    image, video, broken = _lines(capsys.readouterr().out)
    assert image["kind"] == "image" and len(image["faces"]) == 1
    assert video["kind"] == "video" and len(video["frames"]) == 4 and len(video["tracks"]) == 1
    assert video["score"] == video["tracks"][0]["score"] and video["label"] in (
        "fake",
        "real",
        "inconclusive",
    )
    assert broken["label"] == "error" and broken["error"]
    assert [p.name for p in plots.glob("*.png")] == ["00001_b.png"]


def test_detect_uses_the_bundled_default_model(capsys) -> None:
    from aletheia.models.loader import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model bundled in this checkout")
    assert main(["detect", str(ASTRONAUT), "--no-progress"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["model"] == DEFAULT_MODEL.name and record["label"] in ("real", "fake", "inconclusive")
    assert record["threshold"] != 0.5  # the calibrated threshold stored with the model


# -- the smaller items of issue 14: each through the command itself -----------------------------------------------


def _bundled_model() -> Path:
    from aletheia.models.loader import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model bundled in this checkout")
    return DEFAULT_MODEL


def test_version_is_printed_by_the_console_script() -> None:
    import aletheia

    proc = subprocess.run([str(ALETHEIA), "--version"], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"aletheia {aletheia.__version__}")


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["detect", "x.jpg", "--treshold", "0.5"], "did you mean --threshold?"),
        (["serve", "--prot", "8000"], "did you mean --port?"),
        (["detcet", "x.jpg"], "did you mean 'detect'?"),
        (["detect", "x.jpg", "--format", "jsnl"], "did you mean 'jsonl'?"),
        (["weights", "lst"], "did you mean 'list'?"),
    ],
)
def test_a_mistyped_flag_gets_a_short_error_with_a_suggestion(
    args: list[str], suggestion: str, capsys
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and suggestion in err, err
    assert "usage:" not in err and len(err.strip().splitlines()) == 2, (
        "the mistake and where help is, no more"
    )


def test_files_that_are_not_images_or_videos_are_reported(folder: Path, b4_checkpoint: Path, capsys) -> None:
    (folder / ".hidden").write_text("a dotfile is not worth a line")
    (folder / "nested" / "report.pdf").write_bytes(b"%PDF-1.4")
    main(["detect", str(folder), "--model", str(b4_checkpoint), "--no-progress"])
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped:")]
    assert skipped == [
        f"skipped: {folder / 'nested' / 'report.pdf'}: not an image or video",
        f"skipped: {folder / 'notes.txt'}: not an image or video",
    ]
    assert "2 skipped: not an image or video" in captured.err.splitlines()[-1]
    assert all("notes.txt" not in record["path"] for record in _lines(captured.out))


def test_faces_finds_the_faces_of_a_videos_sampled_frames(tmp_path: Path, capsys) -> None:
    from tests.test_video import _moving_astronaut, write_video

    clip = tmp_path / "walk.mp4"
    write_video(clip, _moving_astronaut(count=8), fps=4)
    crops = tmp_path / "crops"
    assert main(["faces", str(clip), "--frames", "4", "--crops", str(crops), "--no-progress"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert (record["kind"], record["error"], len(record["frames"])) == ("video", None, 4)
    assert all(len(frame["faces"]) == 1 for frame in record["frames"]), record["frames"]
    assert [frame["time"] for frame in record["frames"]] == sorted(
        frame["time"] for frame in record["frames"]
    )
    assert len(list(crops.glob("*.png"))) == 4


@pytest.mark.parametrize("name", ["aletheia-lite2", "aletheia-lite2.pth"])
def test_the_bundled_model_is_accepted_by_the_name_results_print(name: str, capsys, tmp_path: Path) -> None:
    bundled = _bundled_model()
    assert main(["detect", str(ASTRONAUT), "--model", name, "--no-progress"]) == 0
    (record,) = _lines(capsys.readouterr().out)
    assert record["model"] == bundled.name
    from aletheia.serving import load_pipelines

    (served,) = load_pipelines([name])  # `aletheia serve --model NAME`
    assert served == bundled.name


def test_models_shows_the_bundled_models_own_threshold(capsys) -> None:
    from aletheia.models.checkpoints import read_checkpoint

    bundled = _bundled_model()
    _, metadata = read_checkpoint(bundled)
    assert main(["models"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(bundled.stem + " ")]
    assert row.split()[2] == f"{metadata['threshold']:.3f}", row


def test_weights_list_does_not_offer_checkpoints_that_cannot_load(tmp_path: Path, capsys) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and not line.startswith("Not")]
    assert rows and not any(name.startswith("Xception") for name in rows)
    assert "Not offered: Xception_DFDC, Xception_FFPP" in out
    # Refused before any download: the mirror named here does not even exist.
    cache = tmp_path / "cache"
    code = main(
        [
            "weights",
            "download",
            "Xception_DFDC",
            "--cache-dir",
            str(cache),
            "--base-url",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2 and "not supported yet" in capsys.readouterr().err
    assert not cache.exists()


def test_a_port_in_use_fails_with_a_clear_message_before_the_url(capsys) -> None:
    import socket

    _bundled_model()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is already in use" in captured.err
    assert "web app at" not in captured.out
