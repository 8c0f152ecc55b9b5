"""Scans at scale: refusal of an existing output, resume after a SIGKILL, Parquet row groups, lazy folder walking,
and the same scan on a real Dask LocalCluster of two worker processes (a worker killed mid-scan loses nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from aletheia.cli import main
from aletheia.io import scan_inputs, walk_inputs
from aletheia.models.loader import DEFAULT_MODEL
from aletheia.scan import ScanSettings, build_detectors, open_sink, run_scan
from aletheia.scan.parquet import ParquetAppender, known_kinds, read_records
from tests.records import timeless

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
ALETHEIA = Path(sys.executable).parent / "aletheia"

pytestmark = pytest.mark.skipif(
    not DEFAULT_MODEL.is_file(), reason="the bundled model is not in this checkout"
)


def _photos(folder: Path, count: int, size: int = 160) -> list[Path]:
    """`count` small photos of a face, each a little different (so each input has its own score), in two folders."""
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (size, size))
    paths = []
    for number in range(count):
        variant = np.clip(image.astype(np.int16) + (number * 7) % 60 - 30, 0, 255).astype(np.uint8)
        path = folder / ("sub" if number % 3 == 0 else "") / f"p{number:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), variant)
        paths.append(path)
    return sorted(paths)


def _lines(path: Path) -> list[dict]:
    return timeless([json.loads(line) for line in path.read_text().splitlines()])


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    _photos(folder, 10)
    (folder / "broken.jpg").write_bytes(ASTRONAUT.read_bytes()[:900])
    return folder


@pytest.fixture(scope="module")
def settings() -> ScanSettings:
    return ScanSettings(batch_size=4)


@pytest.fixture(scope="module")
def detectors(settings: ScanSettings):
    return build_detectors(settings)


@pytest.fixture(scope="module")
def serial(photos: Path, settings: ScanSettings, detectors, tmp_path_factory) -> list[dict]:
    """The reference: the whole folder scanned in this process."""
    out = tmp_path_factory.mktemp("serial") / "all.jsonl"
    sink = open_sink(out, "jsonl")
    try:
        summary = run_scan([photos], sink, settings, detectors=detectors)
    finally:
        sink.close()
    assert summary.done == 11 and summary.failed == 1 and summary.skipped == 0
    records = _lines(out)
    assert sorted(r["label"] for r in records) == ["error"] + ["real"] * 10  # every photo's face found
    return records


# -- refusing, resuming, overwriting -------------------------------------------------------------------------------


def test_an_existing_output_is_refused_naming_resume_and_overwrite(
    photos: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "x"}\n')
    assert main(["detect", str(photos), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--overwrite" in err
    assert out.read_text() == '{"path": "x"}\n'  # untouched
    with pytest.raises(SystemExit):  # the two flags exclude each other
        main(["detect", str(photos), "-o", str(out), "--resume", "--overwrite"])
    assert main(["detect", str(photos), "--resume", "--no-progress"]) == 2  # nothing to resume on stdout
    assert "needs --output" in capsys.readouterr().err


def test_resume_repairs_a_broken_last_line_and_appends_only_the_rest(
    photos: Path, serial: list[dict], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in serial[:4])
    out.write_text(text + json.dumps(serial[4])[:50])  # a kill in the middle of the fifth line
    failed = sum(r["label"] == "error" for r in serial[4:])
    assert main(
        ["detect", str(photos), "-o", str(out), "--resume", "--batch-size", "4", "--no-progress"]
    ) == (1 if failed else 0)
    assert _lines(out) == serial
    err = capsys.readouterr().err
    assert "incomplete last record" in err
    assert (
        f"7 done (real {7 - failed}{', error 1' if failed else ''}), 4 skipped as already done, {failed} failed"
        in err
    )
    # Done: a second resume has nothing left; --overwrite starts again.
    assert main(["detect", str(photos), "-o", str(out), "--resume", "--no-progress"]) == 0
    assert "0 done, 11 skipped as already done, 0 failed, 0 with no face" in capsys.readouterr().err
    assert (
        main(["detect", str(photos), "-o", str(out), "--overwrite", "--batch-size", "4", "--no-progress"])
        == 1
    )
    assert _lines(out) == serial


def test_csv_resumes_too(photos: Path, serial: list[dict], tmp_path: Path) -> None:
    import csv

    out = tmp_path / "out.csv"
    args = ["detect", str(photos), "-o", str(out), "--format", "csv", "--no-progress"]
    assert main(args) == 1
    rows = out.read_bytes().split(b"\r\n")
    out.write_bytes(b"\r\n".join(rows[:6]) + b"\r\n" + rows[6][:30])  # header, 5 rows, a torn sixth
    assert main([*args, "--resume"]) == 0  # the broken photo sorts first: it was done before
    got = list(csv.DictReader(out.open(newline="")))
    assert [r["path"] for r in got] == [r["path"] for r in serial]


def test_walking_is_lazy_and_in_sorted_order(tmp_path: Path, monkeypatch) -> None:
    for folder in range(30):
        for name in ("b.jpg", "a.png", "skip.txt"):
            (tmp_path / f"d{folder:02d}" / "deeper").mkdir(parents=True, exist_ok=True)
            (tmp_path / f"d{folder:02d}" / name).write_bytes(b"x")
            (tmp_path / f"d{folder:02d}" / "deeper" / name).write_bytes(b"x")
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(path) or real_scandir(path))
    walk = walk_inputs([tmp_path])
    first = next(walk)
    assert first.path == tmp_path / "d00" / "a.png"
    assert len(listed) == 2  # the top folder and the first one under it: not the 60 others
    rest = list(walk)
    assert [first, *rest] == scan_inputs([tmp_path])  # the order of sorting whole paths
    assert [i.path for i in [first, *rest]] == sorted(i.path for i in [first, *rest])
    assert len(rest) + 1 == 30 * 4


# -- a SIGKILL midway ----------------------------------------------------------------------------------------------


def _kill_midway(args: list[str], progress: Path, ready) -> None:
    """Start `aletheia detect`, SIGKILL it once `ready(progress)` holds (some results written, not all)."""
    process = subprocess.Popen(
        [str(ALETHEIA), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env()
    )
    deadline = time.monotonic() + 240
    while not (progress.exists() and ready(progress)):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the scan wrote nothing in four minutes"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()


def _env() -> dict:
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("many")
    return folder, _photos(folder, 60, size=128)


@pytest.mark.slow
def test_sigkill_midway_then_resume_gives_exactly_one_line_per_input(many_photos, tmp_path: Path) -> None:
    folder, paths = many_photos
    out = tmp_path / "out.jsonl"
    args = ["detect", str(folder), "-o", str(out), "--batch-size", "2", "--no-progress"]
    _kill_midway(args, out, lambda p: _complete_lines(p) >= 6)
    written = _complete_lines(out)
    assert 6 <= written < len(paths), "the kill was meant to land midway"
    resumed = subprocess.run([str(ALETHEIA), *args, "--resume"], capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped as already done" in resumed.stderr
    records = _lines(out)  # every line is whole JSON
    assert sorted(r["path"] for r in records) == sorted(map(str, paths))  # exactly one line per input
    assert [r["path"] for r in records] == [str(p) for p in paths]  # and still in input order
    done_before = int(resumed.stderr.split(" skipped as already done")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert done_before >= written  # what was written before the kill was kept (a repaired line is redone)


@pytest.mark.slow
def test_parquet_sigkill_midway_then_resume(many_photos, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    folder, paths = many_photos
    out = tmp_path / "out.parquet"
    journal = Path(str(out) + ".journal")
    args = ["detect", str(folder), "-o", str(out), "--format", "parquet", "--row-group-size", "8"]
    args += ["--batch-size", "2", "--no-progress"]
    # Killed once at least two row groups are in the file and more results wait in the journal.
    _kill_midway(args, journal, lambda j: out.exists() and _complete_lines(j) >= 4 and _row_groups(out) >= 2)
    assert journal.exists()
    refused = subprocess.run([str(ALETHEIA), *args], capture_output=True, text=True, env=_env())
    assert refused.returncode == 2 and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    resumed = subprocess.run([str(ALETHEIA), *args, "--resume"], capture_output=True, text=True, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    assert not journal.exists()
    table = pq.read_table(out)
    assert pq.ParquetFile(out).metadata.num_row_groups >= 3
    records = read_records(table)
    assert sorted(r["path"] for r in records) == sorted(map(str, paths))  # one input each, none lost
    assert table.num_rows == sum(max(1, len(r["faces"])) for r in records)  # a row per face


def _row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_row_groups
    except Exception:  # being written
        return 0


# -- Parquet -------------------------------------------------------------------------------------------------------


def test_parquet_keeps_every_field_of_the_json_lines(
    photos: Path, serial: list[dict], tmp_path: Path
) -> None:
    from tests.test_video import _moving_astronaut, write_video

    out = tmp_path / "out.parquet"
    assert main(["detect", str(photos), "-o", str(out), "--format", "parquet", "--row-group-size", "3",
                 "--batch-size", "4", "--no-progress"]) == 1  # fmt: skip
    assert timeless(read_records(out)) == serial
    # A video too: a row per sampled frame and face, its people as JSON; the same JSON lines back.
    video = tmp_path / "clip.mp4"
    write_video(video, _moving_astronaut(), fps=6)
    both = [str(video), str(photos / "p001.jpg")]
    lines, table = tmp_path / "v.jsonl", tmp_path / "v.parquet"
    assert main(["detect", *both, "-o", str(lines), "--frames", "4", "--no-progress"]) == 0
    assert (
        main(["detect", *both, "-o", str(table), "--format", "parquet", "--frames", "4", "--no-progress"])
        == 0
    )
    assert timeless(read_records(table)) == _lines(lines)
    assert _lines(lines)[0]["kind"] == "video" and _lines(lines)[0]["tracks"]


def test_parquet_row_groups_append_per_kind_scores_and_survive_a_torn_append(tmp_path: Path) -> None:
    """Per-kind scores become columns; a row group torn by a kill is cut back to the last complete state."""
    import pandas as pd

    def record(number: int, faces: int) -> dict:
        by_kind = {"manipulated": 0.25, "generated": round(number / 100, 6)}
        face = {"box": [1.0, 2.0, 30.5, 40.0], "detection_score": 0.9, "score": 0.5, "scores": by_kind,
                "keypoints": [[1.0, 2.0]] * 6}  # fmt: skip
        out = {"path": f"/x/{number}.jpg", "kind": "image", "score": 0.5 if faces else None}
        if faces:
            out["scores"] = by_kind
        return out | {"label": "real" if faces else "no_face", "threshold": 0.5, "model": "m",
                      "faces": [face] * faces, "error": None}  # fmt: skip

    path = tmp_path / "r.parquet"
    appender, written = ParquetAppender(path, known_kinds(), None), []
    for group in range(3):
        batch = [record(group * 10 + n, n % 3) for n in range(5)]
        appender.append(batch)
        written += batch
        state = appender.state()
        assert read_records(path) == written
    with path.open("r+b") as handle:  # a kill while the next row group was being written
        handle.seek(state["data_end"])
        handle.write(b"half a row group" * 50)
    ParquetAppender(path, known_kinds(), state)
    assert read_records(path) == written
    frame = pd.read_parquet(path)
    assert {"scores_manipulated", "face_scores_generated"} <= set(frame.columns)
    assert len(frame) == sum(max(1, n % 3) for _ in range(3) for n in range(5))


# -- Dask ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    from aletheia.scan.distributed import start_client

    client, local = start_client("local:2")
    try:
        yield client
    finally:
        client.close()
        local.close()


def _assert_same_scores(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for mine, theirs in zip(got, want, strict=True):
        assert mine["label"] == theirs["label"] and mine["error"] == theirs["error"]
        assert len(mine["faces"]) == len(theirs["faces"])
        if theirs["score"] is not None:
            assert abs(mine["score"] - theirs["score"]) <= 1e-4
        for a, b in zip(mine["faces"], theirs["faces"], strict=True):
            assert abs(a["score"] - b["score"]) <= 1e-4 and a["box"] == pytest.approx(b["box"], abs=0.1)


@pytest.mark.slow
def test_a_local_cluster_of_two_processes_gives_the_serial_scores(
    cluster, photos: Path, settings: ScanSettings, serial: list[dict], tmp_path: Path
) -> None:
    assert len(cluster.scheduler_info()["workers"]) == 2
    out = tmp_path / "dask.jsonl"
    sink = open_sink(out, "jsonl")
    try:
        summary = run_scan([photos], sink, settings, client=cluster, shard_size=3)
    finally:
        sink.close()
    assert summary.done == 11 and summary.failed == 1
    _assert_same_scores(_lines(out), serial)
    # The models were loaded once per worker: both workers hold the plugin, and scored shards with it.
    plugins = cluster.run(lambda dask_worker: sorted(dask_worker.plugins))
    assert all(any(name.startswith("aletheia-detectors-") for name in names) for names in plugins.values())


@pytest.mark.slow
def test_a_worker_killed_mid_scan_loses_nothing(
    cluster, photos: Path, settings: ScanSettings, serial: list[dict], tmp_path: Path
) -> None:
    out = tmp_path / "dask.jsonl"
    killed: list[int] = []

    def kill_a_busy_worker(records: list[dict], results) -> None:
        if killed:
            return
        busy = [address for address, keys in cluster.processing().items() if keys]
        assert busy, "no shard in flight to lose"
        pid = cluster.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    sink = open_sink(out, "jsonl")
    try:
        summary = run_scan(
            [photos], sink, settings, client=cluster, shard_size=1, on_batch=kill_a_busy_worker
        )
    finally:
        sink.close()
    assert killed and summary.done == 11
    _assert_same_scores(_lines(out), serial)  # every input once, in order, with the serial scores
    cluster.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker
    assert killed[0] not in cluster.run(os.getpid).values()


@pytest.mark.slow
def test_mlrun_dask_function_runs_the_scan_on_the_cluster(
    cluster, photos: Path, serial: list[dict], tmp_path: Path, monkeypatch
) -> None:
    """The MLRun `dask` function, without an MLRun service: MLRun hands the handler the Dask client of this process
    (with a service, MLRun would start the cluster on Kubernetes instead; see aletheia/scan/mlrun_scan.py)."""
    monkeypatch.delenv("MLRUN_DBPATH", raising=False)
    from aletheia.scan.mlrun_scan import scan_function

    out = tmp_path / "mlrun.jsonl"
    function = scan_function("dask")
    params = {"paths": [str(photos)], "output": str(out), "batch_size": 4, "shard_size": 4}
    run = function.run(handler="scan", params=params, output_path=str(tmp_path / "artifacts"))
    assert run.status.state == "completed"
    assert run.status.results["engine"] == "dask" and run.status.results["done"] == 11
    _assert_same_scores(_lines(out), serial)


def _fragile_shard(plugin_name: str, items: list, assume_face: bool) -> list[dict]:
    """A stand-in for scan_shard whose worker dies on any shard holding a 'poison' input."""
    if any("poison" in path for path, _ in items):
        os._exit(1)
    return [
        {"path": path, "label": "real", "threshold": 0.5, "model": "m", "error": None} for path, _ in items
    ]


@pytest.mark.slow
def test_an_input_that_kills_every_worker_it_meets_gets_an_error_line(monkeypatch) -> None:
    """A shard that kills its workers is split; the innocent inputs are scored, the culprit gets an error line."""
    import dask
    from distributed import Client, LocalCluster

    from aletheia.io import ScannedInput
    from aletheia.scan import distributed

    monkeypatch.setattr(
        distributed, "register_detectors", lambda client, settings: distributed.DetectorPlugin(settings)
    )
    names = [f"in{n}.jpg" for n in range(7)]
    names[4] = "poison.jpg"
    written: list[dict] = []
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),  # the first death is final
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as local,
        Client(local) as client,
    ):
        distributed.scan_on_cluster(
            client, iter([ScannedInput(Path(n)) for n in names]), ScanSettings(),
            lambda records, results: written.extend(records), shard_size=3, task=_fragile_shard, window=1,
        )  # fmt: skip
    assert [r["path"] for r in written] == names  # in order, none lost
    poison = written[4]
    assert poison["label"] == "error" and "died" in poison["error"] and poison["threshold"] == 0.5
    assert all(r["label"] == "real" for n, r in enumerate(written) if n != 4)
