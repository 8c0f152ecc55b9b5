"""What a user of `aletheia detect` waits for and pays: one photo as a whole process, a folder of 1080p photos, and
the size of an install without the training extras, each beside a baseline measured in the same run.

    python benchmarks/torch_free_detect.py [--photos DIR] [--baseline-commit REV] [--repeats 5]

* Whole process: `python -m aletheia.cli detect photo.jpg` for this tree and for the baseline tree (`git archive` of
  --baseline-commit into a temporary folder), alternating, with wall time and peak memory (max RSS of the child),
  on a 512 px and a 1080p photo. Whether torch was imported is printed too.
* Folder: DeepfakeDetectorPipeline().predict_many over 1080p photos made by resizing the development photos (cover
  1920x1080, centre crop; written to a temporary folder, never kept), overlapped (the default) against serial
  (`workers=0`) in the same process, alternating; photos per second, medians. The scores must agree.
* `aletheia detect FOLDER` as the command scans it (its settings, `run_scan` into a JSONL file), timed after the
  models load, each tree in a process of its own, alternating with --baseline-commit: photos per second and CPU
  milliseconds per photo (all threads), medians, and their ratio.
* Install size: the installed files of the distributions a minimal install needs (the runtime dependencies and
  what they need, read from this environment's metadata) against those of the full install.

Prints the CPU model. Without ../shared/data the photos are made from examples/astronaut.jpg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos"
EXAMPLE = ROOT / "examples" / "astronaut.jpg"
# The distributions `aletheia detect` and `aletheia serve` need: pyproject's dependencies (without the extras).
RUNTIME = [
    re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0]
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
]


# `aletheia detect PHOTO` as the console script runs it, then whether torch was imported.
PROBE = """
import runpy, sys
sys.argv = ["aletheia", "detect", PHOTO, "--no-progress", "-o", "out.jsonl"]
code = 0
try:
    runpy.run_module("aletheia.cli", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("TORCH", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        name = re.search(r"model name\s*:\s*(.*)", text)
        return f"{name.group(1) if name else platform.processor()}, {os.cpu_count()} logical CPUs"
    except OSError:
        return platform.processor()


def make_photos(source: Path, out_dir: Path, size=(1920, 1080)) -> list[Path]:
    import cv2

    files = (
        sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if source.is_dir()
        else []
    )
    files = files or [EXAMPLE]
    paths = []
    for number, path in enumerate(files):
        image = cv2.imread(str(path))
        if image is None:
            continue
        scale = max(size[0] / image.shape[1], size[1] / image.shape[0])
        resized = cv2.resize(
            image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        )
        top, left = (resized.shape[0] - size[1]) // 2, (resized.shape[1] - size[0]) // 2
        out = out_dir / f"{number:03d}_{path.stem}.jpg"
        cv2.imwrite(
            str(out), resized[top : top + size[1], left : left + size[0]], [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        paths.append(out)
    return paths


def run_process(tree: Path, photo: Path, cwd: Path) -> dict:
    """One `aletheia detect` process: wall seconds and whether it imported torch."""
    probe = PROBE.replace("PHOTO", repr(str(photo)))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    (cwd / "out.jsonl").unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return {"seconds": seconds, "torch": "TORCH True" in proc.stderr}


def peak_rss_mb(tree: Path, photo: Path, cwd: Path) -> float:
    """Peak RSS of one process, from /usr/bin/time (exact per process, unlike RUSAGE_CHILDREN)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "aletheia.cli", "detect", str(photo),
                           "--no-progress", "-o", "out.jsonl", "--overwrite"],
                          cwd=cwd, env=env, capture_output=True, text=True)  # fmt: skip
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def processes(baseline: Path | None, photos: dict[str, Path], repeats: int, cwd: Path) -> list[dict]:
    trees = {"this tree": ROOT, **({"baseline": baseline} if baseline else {})}
    rows = []
    for label, photo in photos.items():
        times: dict[str, list[float]] = {name: [] for name in trees}
        torch_loaded = {}
        for _ in range(repeats):
            for name, tree in trees.items():
                run = run_process(tree, photo, cwd)
                times[name].append(run["seconds"])
                torch_loaded[name] = run["torch"]
        for name, tree in trees.items():
            rows.append({"photo": label, "tree": name, "median_s": round(statistics.median(times[name]), 2),
                         "peak_mb": round(peak_rss_mb(tree, photo, cwd)), "imports_torch": torch_loaded[name]})  # fmt: skip
    return rows


def folder(paths: list[Path], repeats: int) -> dict:
    from aletheia import DeepfakeDetectorPipeline
    from aletheia.overlap import default_workers

    pipeline = DeepfakeDetectorPipeline()
    list(pipeline.predict_many(paths[:4]))  # warm-up
    modes = {"serial": 0, "1 thread beside the classifier": 1, f"{default_workers()} threads (default)": None}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    scores = {}
    for _ in range(repeats):
        for mode, workers in modes.items():
            start = time.perf_counter()
            results = list(pipeline.predict_many(paths, workers=workers))
            rates[mode].append(len(paths) / (time.perf_counter() - start))
            scores[mode] = [f.score for r in results for f in r.faces]
    for mode in modes:
        assert scores[mode] == scores["serial"], "threads changed the scores"
    serial = statistics.median(rates["serial"])
    return {"photos": len(paths), "faces": len(scores["serial"]),
            **{f"{mode} photos/s": round(statistics.median(r), 2) for mode, r in rates.items()},
            **{f"{mode} speed-up": round(statistics.median(r) / serial, 2) for mode, r in rates.items()
               if mode != "serial"}}  # fmt: skip


def scan_folder(folder: Path, out_dir: Path) -> dict:
    """`aletheia detect FOLDER -o out.jsonl` in this process, timed after the models load and a warm-up."""
    from aletheia.cli import _scan_settings, build_parser
    from aletheia.scan import build_detectors, open_sink, run_scan

    photos = sorted(folder.iterdir())
    args = build_parser().parse_args(
        ["detect", str(folder), "-o", str(out_dir / "scan.jsonl"), "--no-progress"]
    )
    settings = _scan_settings(args)
    detectors = build_detectors(settings)

    def scan(paths: list[Path], name: str) -> tuple[float, float, int]:
        sink = open_sink(out_dir / name, "jsonl", resume=False, overwrite=True)
        start, start_cpu = time.perf_counter(), time.process_time()
        summary = run_scan(paths, sink, settings, detectors=detectors)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        sink.close()
        return wall, cpu, summary.done

    scan(photos[:4], "warm.jsonl")
    wall, cpu, done = scan([folder], "scan.jsonl")
    return {"photos_s": round(done / wall, 2), "cpu_ms_per_photo": round(cpu / done * 1000, 1)}


def scan_folders(folder: Path, baseline: Path | None, rounds: int, tmp_dir: Path) -> list[dict]:
    """scan_folder for this tree and the baseline, each in its own process, alternating."""
    trees = {**({"baseline": baseline} if baseline else {}), "this tree": ROOT}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            proc = subprocess.run([sys.executable, __file__, "--scan-worker", str(folder)], env=env, cwd=tmp_dir,
                                  capture_output=True, text=True)  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            runs[name].append(json.loads(proc.stdout.splitlines()[-1]))
    rows = [
        {"tree": name, **{k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}}
        for name in trees
    ]
    if baseline:
        base, this = rows
        this["speed-up"] = round(this["photos_s"] / base["photos_s"], 2)
        this["cpu ratio"] = round(base["cpu_ms_per_photo"] / this["cpu_ms_per_photo"], 2)
    return rows


def _requirements(name: str) -> list[str]:
    try:
        requires = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    return [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]


def closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_requirements(name))
    return seen


def installed_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def install_sizes() -> dict:
    minimal = closure(RUNTIME)
    full = closure([r for r in _requirements("aletheia")] or RUNTIME) | closure(["torch", "mlrun", "openvino", "albumentations", "scikit-learn", "matplotlib", "onnx"])  # fmt: skip
    return {"minimal_mb": round(installed_mb(minimal)), "minimal_distributions": len(minimal),
            "full_mb": round(installed_mb(full)), "full_distributions": len(full),
            "torch_mb": round(installed_mb(closure(["torch"])))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="photos to resize to 1080p")
    parser.add_argument(
        "--baseline-commit", help="a commit of this repository to measure the processes against"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["process", "folder", "scan", "install"])
    parser.add_argument(
        "--scan-worker", type=Path, help=argparse.SUPPRESS
    )  # one scan_folder, for scan_folders
    args = parser.parse_args()
    if args.scan_worker:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(scan_folder(args.scan_worker, Path(tmp))))
        return
    print(f"CPU: {cpu_model()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        (tmp_dir / "photos").mkdir()
        photos = make_photos(args.photos, tmp_dir / "photos")
        if "install" not in args.skip:
            print("install:", json.dumps(install_sizes()))
        baseline = None
        if args.baseline_commit:
            baseline = tmp_dir / "baseline"
            baseline.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_commit],
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        if "folder" not in args.skip:
            print("folder of 1080p photos:", json.dumps(folder(photos, args.repeats)))
        if "scan" not in args.skip:
            for row in scan_folders(tmp_dir / "photos", baseline, args.repeats, tmp_dir):
                print(f"aletheia detect FOLDER ({len(photos)} 1080p photos):", json.dumps(row))
        if "process" not in args.skip:
            import cv2

            small = tmp_dir / "512px.jpg"
            image = cv2.imread(str(EXAMPLE))
            cv2.imwrite(str(small), cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA))
            one_face = next((p for p in photos if "1face" in p.name), photos[0])
            for row in processes(baseline, {"512 px": small, "1080p": one_face}, args.repeats, tmp_dir):
                print("aletheia detect photo.jpg:", json.dumps(row))


if __name__ == "__main__":
    main()
