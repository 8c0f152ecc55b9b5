"""Face search (stage 1) speed and recall: where its time goes, against an earlier commit and against the tile
pyramid it replaced, each measured in the same run, as markdown tables.

    .venv/bin/python benchmarks/detector_speed.py [--repeats 7] [--threads N] [--baseline-commit REV]
                                                  [--skip levels baseline tiled recall]

Photos: a 1920x1080 photo with one large face (as benchmarks/pipeline_speed.py composes it), and 1920x1080 and
4000x3000 photos of noise with the bundled astronaut pasted at 1/2, 1/4 and 1/8 of the height. Each cell is the
median over ``--repeats`` timed calls after a warm-up call.

* levels: the 1080p one-face photo's search taken apart: making every level's input (resizing), then per level the
  network alone and the network with decoding and NMS, on one thread; and the whole search on one thread and on
  the search's default threads (two levels at a time where the process has two CPUs).
* baseline: `FaceDetector().detect` of this tree and of --baseline-commit (`git archive` into a temporary folder),
  each in processes of their own, alternating, three rounds: wall and CPU time (CPU time is the steadier figure on
  a shared machine), and the faces found, which must agree.
* tiled: the whole-image search against the former tile pyramid (benchmarks/tiled_face_search.py).
* recall: with the development photos present (../shared/data/photos), faces found and false detections against
  the hand count in tests/faces/test_face_search.py, for both searches.

The CPU model, thread settings and load average are printed: on a shared machine compare ratios, not milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
PHOTOS = Path(os.environ.get("ALETHEIA_SHARED_DATA", ROOT.parent / "shared" / "data")) / "photos"

from benchmarks.torch_free_detect import cpu_model  # noqa: E402

# Times FaceDetector().detect on the images named in argv[2:] for the tree on PYTHONPATH: one JSON line.
PROBE = """
import json, statistics, sys, time
import cv2
from aletheia.faces.extract import FaceDetector
repeats, names = int(sys.argv[1]), sys.argv[2:]
detector = FaceDetector()
out = {}
for name in names:
    image = cv2.cvtColor(cv2.imread(name), cv2.COLOR_BGR2RGB)
    faces = len(detector.detect(image))
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        detector.detect(image)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    out[name] = {"faces": faces, "wall": wall, "cpu": cpu}
print(json.dumps(out))
"""


def compose(width: int, height: int, seed: int = 0) -> np.ndarray:
    """RGB noise of the given size with the astronaut pasted at 1/2, 1/4 and 1/8 of the image height."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(128, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    astronaut = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    x = 0
    for fraction in (2, 4, 8):
        side = height // fraction
        image[:side, x : x + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
        x += side
    return image


def one_face_1080p() -> np.ndarray:
    """pipeline_speed.py's one-face photo: the astronaut at 900 px on a blurred-noise 1920x1080 background."""
    astronaut = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 8)
    image[90:990, 510:1410] = cv2.resize(astronaut, (900, 900), interpolation=cv2.INTER_CUBIC)
    return image


def median_ms(fn, repeats: int, clock=time.perf_counter) -> float:
    """Median milliseconds of `fn()` after a warm-up call, by `clock` (time.process_time: CPU time)."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1000


def levels_table(image: np.ndarray, repeats: int) -> None:
    """Where the search's time goes on one photo: inputs, then each level's network and decoding + NMS (CPU time of
    one thread: waiting for a core on a shared machine is not counted)."""
    from aletheia.faces import extract
    from aletheia.faces.networks import SHORT_RANGE

    def cpu_ms(fn) -> float:
        return median_ms(fn, repeats, time.process_time)

    one = extract.FaceDetector(threads=1)
    levels = one.levels(*image.shape[:2])
    inputs = extract._level_inputs(image, levels)
    print("| stage 1, 1080p one face, one thread | input (h x w) | network CPU ms | + decoding, NMS |")
    print("|---|---:|---:|---:|")
    print(f"| making all {len(levels)} level inputs (resizing) | | | "
          f"{cpu_ms(lambda: extract._level_inputs(image, levels)):.1f} |")  # fmt: skip
    for level, level_input in zip(levels, inputs, strict=True):
        short = level.spec is SHORT_RANGE
        network = one._short if short else one._full
        threshold = one.score_threshold if short else one.full_range_threshold
        batch = level_input[None]
        raw = cpu_ms(lambda n=network, b=batch: n.raw_outputs(b))
        full = cpu_ms(lambda n=network, b=batch, t=threshold: n.detect(b, t, one.nms_iou))
        name = f"{level.spec.name}, scale {level.scale:.3f}" + (" (zoomed out)" if level.canvas else "")
        print(f"| {name} | {level_input.shape[0]} x {level_input.shape[1]} | {raw:.1f} | {full:.1f} |")
    print(f"| **whole search, one thread** (CPU ms) | | | **{cpu_ms(lambda: one.detect(image)):.1f}** |")
    threads = extract.FaceDetector()
    print(f"| **whole search, {threads._workers} level(s) at a time** (wall ms; CPU ms) | | | "
          f"**{median_ms(lambda: threads.detect(image), repeats):.1f}**; {cpu_ms(lambda: threads.detect(image)):.1f} |\n")  # fmt: skip


def baseline_table(photos: list[tuple[str, np.ndarray]], commit: str, repeats: int, tmp_dir: Path) -> None:
    """FaceDetector().detect of this tree against a commit's, in alternating processes."""
    baseline = tmp_dir / "baseline"
    baseline.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
    names = []
    for i, (_, image) in enumerate(photos):
        names.append(str(tmp_dir / f"photo{i}.png"))
        cv2.imwrite(names[-1], cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    trees = {"this tree": ROOT, commit: baseline}
    runs: dict[str, dict[str, dict[str, list]]] = {
        tree: {n: {"wall": [], "cpu": []} for n in names} for tree in trees
    }
    faces: dict[str, dict[str, int]] = {tree: {} for tree in trees}
    for _ in range(3):
        for tree, path in trees.items():
            env = {**os.environ, "PYTHONPATH": str(path)}
            command = [sys.executable, "-c", PROBE, str(repeats), *names]
            # In the temporary folder: `python -c` puts the working directory first on the path.
            proc = subprocess.run(command, env=env, cwd=tmp_dir, capture_output=True, text=True, check=True)
            for name, row in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                runs[tree][name]["wall"] += row["wall"]
                runs[tree][name]["cpu"] += row["cpu"]
                faces[tree][name] = row["faces"]
    print(
        f"| photo | faces {commit} / this tree | {commit} ms (CPU ms) | this tree ms (CPU ms) | speed-up (CPU) |"
    )
    print("|---|---:|---:|---:|---:|")
    for (label, _), name in zip(photos, names, strict=True):
        old, new = runs[commit][name], runs["this tree"][name]
        ms = {key: (statistics.median(old[key]) * 1000, statistics.median(new[key]) * 1000) for key in old}
        print(f"| {label} | {faces[commit][name]} / {faces['this tree'][name]} | {ms['wall'][0]:.1f} "
              f"({ms['cpu'][0]:.1f}) | {ms['wall'][1]:.1f} ({ms['cpu'][1]:.1f}) | "
              f"{ms['wall'][0] / ms['wall'][1]:.2f}x ({ms['cpu'][0] / ms['cpu'][1]:.2f}x) |")  # fmt: skip
    print()


def tiled_table(photos: list[tuple[str, np.ndarray]], repeats: int) -> None:
    from aletheia.faces.extract import FaceDetector
    from benchmarks.tiled_face_search import TiledFaceDetector

    new, old = FaceDetector(), TiledFaceDetector()
    print("| image | faces tiled / whole | tiled ms | whole-image ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for label, image in photos:
        found = f"{len(old.detect(image))} / {len(new.detect(image))}"
        before, after = (median_ms(lambda d=d, i=image: d.detect(i), repeats) for d in (old, new))
        print(f"| {label} | {found} | {before:.0f} | {after:.0f} | {before / after:.1f}x |")
    print()


def recall_table() -> None:
    from aletheia.faces.extract import FaceDetector
    from aletheia.io import load_image
    from benchmarks.tiled_face_search import TiledFaceDetector
    from tests.faces.test_face_search import HAND_COUNT, _found

    new, old = FaceDetector(), TiledFaceDetector()
    totals = {"tiled": [0, 0, 0.0], "whole-image": [0, 0, 0.0]}
    faces = 0
    for path in sorted(PHOTOS.glob("*/*")):
        name = str(path.relative_to(PHOTOS))
        image = load_image(path)
        certain, most = HAND_COUNT.get(name, (1, 1))
        faces += certain
        for key, detector in (("tiled", old), ("whole-image", new)):
            start = time.perf_counter()
            n = len(detector.detect(image))
            totals[key][2] += time.perf_counter() - start
            hit, false = _found(certain, most, n)
            totals[key][0] += hit
            totals[key][1] += false
    print(f"| search ({len(list(PHOTOS.glob('*/*')))} development photos) | faces found (hand count) "
          "| false detections | total s |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for key, (hit, false, seconds) in totals.items():
        print(f"| {key} | {hit} of {faces} | {false} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="threads for ONNX Runtime and the search")
    parser.add_argument("--baseline-commit", help="a commit of this repository to time the search against")
    parser.add_argument("--skip", nargs="*", default=[], choices=["levels", "baseline", "tiled", "recall"])
    args = parser.parse_args()
    if args.threads:  # for the baseline's processes too
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from aletheia.onnxrt import set_num_threads, thread_count

    set_num_threads(args.threads)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"CPU: {cpu_model()}; load average {load}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"threads: {thread_count()}; repeats: {args.repeats}\n")  # fmt: skip
    photos = [("1920x1080, one face", one_face_1080p())]
    photos += [(f"{w}x{h}, three faces", compose(w, h)) for w, h in ((1920, 1080), (4000, 3000))]
    if "levels" not in args.skip:
        levels_table(photos[0][1], args.repeats)
    if args.baseline_commit and "baseline" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            baseline_table(photos, args.baseline_commit, args.repeats, Path(tmp))
    if "tiled" not in args.skip:
        tiled_table(photos, args.repeats)
    if "recall" not in args.skip:
        if PHOTOS.is_dir():
            recall_table()
        else:
            print(f"(no development photos at {PHOTOS}: recall skipped)")


if __name__ == "__main__":
    main()
