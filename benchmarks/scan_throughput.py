"""Scan throughput: photos per second for N 1080p photos, serial and on Dask LocalClusters, with worker memory and
what the Dask scheduler costs per input.

    .venv/bin/python benchmarks/scan_throughput.py --photos 2000 [--workers 1,2] [--shard-size 32] [--json out.json]

The photos (1920x1080 JPEGs, one face each, at a varying place and size) are composed from the bundled example
photo into a temporary folder (or --folder, kept for the next run). Each configuration scans the whole folder with
the bundled model to a JSON-lines file, as `aletheia detect` does:

* serial: this process, torch and ONNX Runtime on all cores (their default);
* local:N: `aletheia detect --dask local:N`'s engine, N worker processes with cores/N threads each.

Start-up (loading models, starting the cluster) is timed apart from the scan; photos/s is over the scan alone.
Worker memory is each worker process's resident size after the scan and its peak (max RSS). The scheduler's cost
per input is measured by the same engine with the scoring replaced by a no-op task, at the shard size used and at
one input per task. Measure on a quiet machine: other work on the cores shows directly in photos/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "astronaut.jpg"


def compose_photos(folder: Path, count: int) -> list[Path]:
    """`count` 1920x1080 JPEGs, each with the example face at its own place and size (120-600 px)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    face = cv2.imread(str(EXAMPLE))
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 8)
    paths = []
    for number in range(count):
        path = folder / f"{number // 1000:03d}" / f"photo_{number:06d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        side = int(rng.integers(120, 600))
        x, y = int(rng.integers(0, 1920 - side)), int(rng.integers(0, 1080 - side))
        image = background.copy()
        image[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def _worker_memory(dask_worker=None) -> dict:
    """This process's resident memory now and at its peak (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    import psutil

    status = Path("/proc/self/status").read_text()
    peak_kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return {"rss_mb": psutil.Process().memory_info().rss / 2**20, "peak_rss_mb": peak_kb / 1024}


def _noop_shard(plugin_name: str, items: list, assume_face: bool) -> list[dict]:
    return [{"path": path, "label": "real"} for path, _ in items]


def run_serial(folder: Path, out: Path) -> dict:
    from aletheia.scan import ScanSettings, build_detectors, open_sink, run_scan

    settings = ScanSettings()
    start = time.perf_counter()
    detectors = build_detectors(settings)
    startup = time.perf_counter() - start
    sink = open_sink(out, "jsonl", overwrite=True)
    start = time.perf_counter()
    try:
        summary = run_scan([folder], sink, settings, detectors=detectors)
    finally:
        sink.close()
    seconds = time.perf_counter() - start
    return {"engine": "serial", "startup_s": startup, "scan_s": seconds, "photos": summary.done,
            "photos_per_s": summary.done / seconds, "failed": summary.failed, "no_face": summary.no_face,
            "process": _worker_memory()}  # fmt: skip


def run_dask(folder: Path, out: Path, workers: int, shard_size: int) -> dict:
    from aletheia.scan import ScanSettings, open_sink, run_scan
    from aletheia.scan.distributed import local_threads, register_detectors, scan_on_cluster, start_client
    from aletheia.scan.engine import ScanSummary, pending_inputs

    settings = ScanSettings(threads=local_threads(workers))
    start = time.perf_counter()
    client, cluster = start_client(f"local:{workers}")
    try:
        register_detectors(client, settings)
        startup = time.perf_counter() - start
        sink = open_sink(out, "jsonl", overwrite=True)
        start = time.perf_counter()
        try:
            summary = run_scan([folder], sink, settings, client=client, shard_size=shard_size)
        finally:
            sink.close()
        seconds = time.perf_counter() - start
        memory = list(client.run(_worker_memory).values())
        # The scheduler alone: the same engine, shards that do nothing.
        costs = {}
        for size in sorted({shard_size, 1}):
            inputs = pending_inputs([folder], set(), ScanSummary())
            begin = time.perf_counter()
            count = 0

            def tally(records: list[dict], results) -> None:
                nonlocal count
                count += len(records)

            scan_on_cluster(client, inputs, settings, tally, shard_size=size, task=_noop_shard)
            costs[f"shard_size_{size}"] = (time.perf_counter() - begin) / max(1, count) * 1e3
    finally:
        client.close()
        cluster.close()
    return {"engine": f"local:{workers}", "shard_size": shard_size, "startup_s": startup, "scan_s": seconds,
            "photos": summary.done, "photos_per_s": summary.done / seconds, "failed": summary.failed,
            "no_face": summary.no_face, "workers": memory, "scheduler_ms_per_input": costs}  # fmt: skip


def _scores(path: Path) -> dict[str, float | None]:
    return {r["path"]: r["score"] for r in map(json.loads, path.read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=2000, help="how many 1080p photos (default 2000)")
    parser.add_argument(
        "--workers", default="1,2", help="LocalCluster sizes to run, comma-separated (default 1,2)"
    )
    parser.add_argument("--shard-size", type=int, default=32, help="inputs per Dask task (default 32)")
    parser.add_argument(
        "--folder", type=Path, help="compose the photos here and keep them (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-serial", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch) / "photos"
        start = time.perf_counter()
        compose_photos(folder, args.photos)
        print(f"{args.photos} photos of 1920x1080 in {folder} ({time.perf_counter() - start:.0f} s to compose)",
              file=sys.stderr)  # fmt: skip
        runs = []
        if not args.skip_serial:
            runs.append(run_serial(folder, Path(scratch) / "serial.jsonl"))
            print(json.dumps(runs[-1]), file=sys.stderr)
        for workers in [int(w) for w in args.workers.split(",") if w]:
            runs.append(run_dask(folder, Path(scratch) / f"local{workers}.jsonl", workers, args.shard_size))
            print(json.dumps(runs[-1]), file=sys.stderr)
        outputs = [
            Path(scratch) / name
            for name in ["serial.jsonl"] + [f"local{w}.jsonl" for w in args.workers.split(",") if w]
        ]
        existing = [p for p in outputs if p.exists()]
        reference = _scores(existing[0])
        for other in existing[1:]:
            scores = _scores(other)
            worst = max((abs(scores[k] - v) for k, v in reference.items() if v is not None), default=0.0)
            print(
                f"largest score difference, {other.stem} vs {existing[0].stem}: {worst:.2e}", file=sys.stderr
            )

    import subprocess

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?"
    )
    print(
        f"\n{args.photos} photos, 1920x1080, one face each; {model}, {os.cpu_count()} cores, {platform.python_version()}\n"
    )
    print(
        "| engine | start-up s | scan s | photos/s | memory per process (RSS after / peak, MB) | scheduler ms per input |"
    )
    print("|---|---|---|---|---|---|")
    for run in runs:
        if run["engine"] == "serial":
            memory = f"{run['process']['rss_mb']:.0f} / {run['process']['peak_rss_mb']:.0f} (this process)"
            cost = "-"
        else:
            memory = ", ".join(f"{w['rss_mb']:.0f} / {w['peak_rss_mb']:.0f}" for w in run["workers"])
            cost = ", ".join(
                f"{v:.2f} ({k.replace('_', ' ')})" for k, v in run["scheduler_ms_per_input"].items()
            )
        print(f"| {run['engine']} | {run['startup_s']:.1f} | {run['scan_s']:.1f} | {run['photos_per_s']:.2f} | "
              f"{memory} | {cost} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"photos": args.photos, "cpu": model, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
