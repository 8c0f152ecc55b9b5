"""Stage-1 (faces) and stage-2 (classifier) time and peak memory of the pipeline, beside a one-face-at-a-time baseline.

    .venv/bin/python benchmarks/pipeline_speed.py [--model CHECKPOINT] [--image PATH ...] [--repeats 5]

Without --model a randomly initialised EfficientNetAutoAttB4 is saved and loaded (speed does not depend on the
weights). Without --image two photos are composed from the bundled public-domain example: a 1920x1080 photo with
one face and a 1920x1080 group photo with five faces. Each configuration runs in its own process so that peak
memory (max RSS) is its own. The baseline scores faces one by one in eager PyTorch, as the original demo did.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "astronaut.jpg"


def compose_photos(out_dir: Path) -> list[Path]:
    """A 1080p photo with one large face and a 1080p group photo with five faces of 90-260 px."""
    import cv2

    from aletheia.io import load_image

    astronaut = load_image(EXAMPLE)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (1080, 1920, 3), dtype=np.uint8), (0, 0), 8)
    single = background.copy()
    big = cv2.resize(astronaut, (900, 900), interpolation=cv2.INTER_CUBIC)
    single[90:990, 510:1410] = big
    group = background.copy()
    for (x, y), side in zip(
        [(40, 300), (420, 200), (800, 420), (1180, 250), (1500, 500)], [300, 420, 330, 480, 360], strict=True
    ):
        group[y : y + side, x : x + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    paths = [out_dir / "one_face_1080p.jpg", out_dir / "group_1080p.jpg"]
    for path, image in zip(paths, [single, group], strict=True):
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return paths


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def worker(mode: str, checkpoint: str, image_path: str, repeats: int, backend: str) -> dict:
    import torch

    from aletheia.faces.extract import FaceDetector
    from aletheia.io import load_image
    from aletheia.pipeline import DeepfakeDetectorPipeline

    # The baseline is the original demo's way: BlazeFace and the classifier in eager torch, one face at a time.
    detector_backend = "torch" if mode == "baseline" else "auto"
    pipeline = DeepfakeDetectorPipeline(model_checkpoint=checkpoint, backend=backend)
    pipeline.detector = FaceDetector(backend=detector_backend)
    image = load_image(image_path)
    faces = pipeline.detector.detect(image)
    crops = np.stack([pipeline.predict(image).faces[i].crop for i in range(len(faces))]) if faces else None
    stage1 = _median_ms(lambda: pipeline.detector.detect(image), repeats)
    if crops is None:
        stage2 = 0.0
    elif mode == "batched":
        stage2 = _median_ms(lambda: pipeline.score_crops(crops), repeats)
    else:
        stage2 = _median_ms(lambda: [pipeline.score_crops(c[None]) for c in crops], repeats)
    total = _median_ms(lambda: pipeline.predict(image), repeats)
    return {
        "image": Path(image_path).name,
        "size": f"{image.shape[1]}x{image.shape[0]}",
        "faces": len(faces),
        "mode": mode,
        "backend": backend,
        "stage1_ms": round(stage1, 1),
        "stage2_ms": round(stage2, 1),
        "stage2_ms_per_face": round(stage2 / max(1, len(faces)), 1),
        "total_ms": round(total, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="checkpoint file (default: random EfficientNetAutoAttB4)")
    parser.add_argument("--image", nargs="*", help="photos to time (default: two composed 1080p photos)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--backends", nargs="*", default=["torch"], help="classifier backends for batched mode"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODE", "CHECKPOINT", "IMAGE", "BACKEND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        mode, checkpoint, image, backend = args.worker
        print(json.dumps(worker(mode, checkpoint, image, args.repeats, backend)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        checkpoint = args.model
        if checkpoint is None:
            import torch

            from aletheia.models.efficientnet import EfficientNetAutoAttB4

            checkpoint = str(tmp_dir / "EfficientNetAutoAttB4_random.pth")
            torch.save(EfficientNetAutoAttB4().state_dict(), checkpoint)
        images = args.image or [str(p) for p in compose_photos(tmp_dir)]
        runs = [("baseline", "torch")] + [("batched", b) for b in args.backends]
        rows = []
        for image in images:
            for mode, backend in runs:
                command = [
                    sys.executable,
                    __file__,
                    "--repeats",
                    str(args.repeats),
                    "--worker",
                    mode,
                    checkpoint,
                    image,
                    backend,
                ]
                proc = subprocess.run(command, capture_output=True, text=True, check=True)
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), file=sys.stderr)
    header = [
        "image",
        "size",
        "faces",
        "mode",
        "backend",
        "stage1_ms",
        "stage2_ms",
        "stage2_ms_per_face",
        "total_ms",
        "peak_rss_mb",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")


if __name__ == "__main__":
    main()
