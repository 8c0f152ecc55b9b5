"""Face detection speed per BlazeFace backend: `FaceDetector.detect` on large photos, as a markdown table.

    .venv/bin/python benchmarks/detector_speed.py [--repeats 5] [--threads N]

The photos are composed from examples/astronaut.jpg pasted (at a few scales) onto Gaussian noise, so the tile
pyramid is as deep as for a real photo of that size. Each cell is the median over ``--repeats`` timed calls after
one warm-up call; the time covers the whole detector (resizing, tiling, network, NMS). The ONNX file goes to a
temporary cache, so the one-off export is not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
SIZES = ((1920, 1080), (4000, 3000))
BACKENDS = ("torch", "onnx")


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch (and so ONNX Runtime) threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ["ALETHEIA_CACHE"] = tempfile.mkdtemp(prefix="aletheia-bench-")
    # Imported after ALETHEIA_CACHE is set, so the export lands in the temporary cache.
    from aletheia.faces.extract import FaceDetector

    print(f"torch threads: {torch.get_num_threads()}, repeats: {args.repeats}\n")
    print("| image | tiles | faces | torch ms | onnx ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for width, height in SIZES:
        image = compose(width, height)
        ms, faces = {}, {}
        for backend in BACKENDS:
            detector = FaceDetector(backend=backend)
            faces[backend] = len(detector.detect(image))  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                detector.detect(image)
                times.append(time.perf_counter() - start)
            ms[backend] = statistics.median(times) * 1000
        tiles = sum(len(level) for _, level in detector._tiles(height, width))
        found = faces["onnx"] if faces["onnx"] == faces["torch"] else f"{faces['torch']} / {faces['onnx']}"
        print(
            f"| {width}x{height} | {tiles} | {found} | {ms['torch']:.0f} | {ms['onnx']:.0f} "
            f"| {ms['torch'] / ms['onnx']:.2f}x |"
        )


if __name__ == "__main__":
    main()
