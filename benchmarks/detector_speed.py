"""Face search speed and recall: the whole-image search (`FaceDetector`) against the tile pyramid it replaced,
measured in the same run, as a markdown table.

    .venv/bin/python benchmarks/detector_speed.py [--repeats 7] [--threads N]

Photos: a 1920x1080 photo with one large face (as benchmarks/pipeline_speed.py composes it), and 1920x1080 and
4000x3000 photos of noise with the bundled astronaut pasted at 1/2, 1/4 and 1/8 of the height. Each cell is the
median over ``--repeats`` timed calls after a warm-up call, over the whole search (resizing, networks, NMS), both
searches on ONNX Runtime. With the development photos present (../shared/data/photos), faces found and false
detections against the hand count in tests/faces/test_face_search.py are printed for both searches too.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
PHOTOS = Path(os.environ.get("ALETHEIA_SHARED_DATA", ROOT.parent / "shared" / "data")) / "photos"


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


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch (and so ONNX Runtime) threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["ALETHEIA_CACHE"] = tempfile.mkdtemp(prefix="aletheia-bench-")
    # Imported after ALETHEIA_CACHE is set, so the exports land in the temporary cache.
    sys.path.insert(0, str(ROOT))
    from aletheia.faces.extract import FaceDetector
    from aletheia.io import load_image
    from benchmarks.tiled_face_search import TiledFaceDetector

    new, old = FaceDetector(), TiledFaceDetector()
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"threads: {torch.get_num_threads()}, repeats: {args.repeats}\n")  # fmt: skip
    print("| image | faces tiled / whole | tiled ms | whole-image ms | speed-up |")
    print("|---|---:|---:|---:|---:|")
    photos = [("1920x1080, one face", one_face_1080p())]
    photos += [(f"{w}x{h}, three faces", compose(w, h)) for w, h in ((1920, 1080), (4000, 3000))]
    for label, image in photos:
        found = f"{len(old.detect(image))} / {len(new.detect(image))}"
        before, after = (median_ms(lambda d=d, i=image: d.detect(i), args.repeats) for d in (old, new))
        print(f"| {label} | {found} | {before:.0f} | {after:.0f} | {before / after:.1f}x |")

    if not PHOTOS.is_dir():
        print(f"\n(no development photos at {PHOTOS}: recall skipped)")
        return
    from tests.faces.test_face_search import HAND_COUNT, _found

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
    print(f"\n| search ({len(list(PHOTOS.glob('*/*')))} development photos) | faces found (hand count) "
          "| false detections | total s |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for key, (hit, false, seconds) in totals.items():
        print(f"| {key} | {hit} of {faces} | {false} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
