"""End-to-end photo time (stage 1 faces, stage 2 classifier) and peak memory of the pipeline as users get it, beside
the seed-style eager baseline measured in the same run.

    .venv/bin/python benchmarks/pipeline_speed.py [--model SPEC] [--image PATH ...] [--repeats 5] [--backends torch]
                                                  [--baseline-commit REV]

Modes, each in a process of its own so that peak memory (max RSS) is its own:
* `seed`: the seed's way, rebuilt: BlazeFace in eager torch on 128 px tiles with 50% overlap (the tile pyramid,
  benchmarks/tiled_face_search.py), the classifier in eager torch (no ONNX), one face at a time, no test-time
  augmentation.
* `current`: `DeepfakeDetectorPipeline(model)` with its defaults: whole-image face search and the classifier on
  ONNX Runtime (for the bundled model: its shipped ONNX file, no torch), mirror TTA, all faces in one batch.
* `batched` (one per --backends entry): the current path with the classifier on that backend.
* `current@REV` (with --baseline-commit): the `current` mode of that commit (`git archive` into a temporary folder).

`--model` is any model spec (default: the bundled model; a randomly initialised EfficientNetAutoAttB4 when none is
bundled: speed does not depend on the weights). Without --image two photos are composed from the bundled
public-domain example: a 1920x1080 photo with one face and a 1920x1080 group photo with five faces. Every figure is
the median of --repeats timed calls after a warm-up call. The CPU model, its core count and the load average are
printed: on a shared machine compare the ratio (`speed-up`), not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
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
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))
# A worker timing --baseline-commit imports aletheia from that tree, this script's helpers from this one.
if os.environ.get("ALETHEIA_BENCH_TREE"):
    sys.path.insert(0, os.environ["ALETHEIA_BENCH_TREE"])

from benchmarks.torch_free_detect import cpu_model  # noqa: E402


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


class SeedStyle:
    """The seed's pipeline, for comparison only: tiled eager-torch BlazeFace, then each face cropped (as today, so
    the crops are the same) and scored alone by the eager torch classifier, without TTA."""

    def __init__(self, model: str | None) -> None:
        from aletheia.pipeline import DeepfakeDetectorPipeline
        from benchmarks.tiled_face_search import TiledFaceDetector

        self.pipeline = DeepfakeDetectorPipeline(model, backend="torch", tta="none")
        self.detector = TiledFaceDetector(backend="torch")

    def detect(self, image: np.ndarray) -> list:
        return self.detector.detect(image)

    def classify(self, crops: np.ndarray) -> list[float]:
        return [float(self.pipeline.score_crops(crop[None])[0]) for crop in crops]

    def predict(self, image: np.ndarray) -> list[float]:
        faces = self.detect(image)
        return self.classify(
            np.stack([self.pipeline.crop_face(image, f.box) for f in faces]) if faces else []
        )


def worker(mode: str, model: str | None, image_path: str, repeats: int, backend: str) -> dict:
    from aletheia.io import load_image
    from aletheia.pipeline import DeepfakeDetectorPipeline

    image = load_image(image_path)
    if mode == "seed":
        seed = SeedStyle(model)
        detect, classify, predict, crop = seed.detect, seed.classify, seed.predict, seed.pipeline.crop_face
        detail = {"tiles": seed.detector.tile_count(*image.shape[:2]), "backend": "torch", "tta": "none"}
    else:
        pipeline = DeepfakeDetectorPipeline(model, backend="auto" if mode == "current" else backend)
        detect, classify, predict, crop = (
            pipeline.detector.detect,
            pipeline.classify,
            pipeline.predict,
            pipeline.crop_face,
        )
        detail = {"tiles": len(pipeline.detector.levels(*image.shape[:2])), "backend": pipeline.backend,
                  "tta": pipeline.tta}  # fmt: skip
    faces = detect(image)
    crops = np.stack([crop(image, face.box) for face in faces]) if faces else None
    stage1 = _median_ms(lambda: detect(image), repeats)
    stage2 = 0.0 if crops is None else _median_ms(lambda: classify(crops), repeats)
    total = _median_ms(lambda: predict(image), repeats)
    return {
        "image": Path(image_path).name,
        "size": f"{image.shape[1]}x{image.shape[0]}",
        "faces": len(faces),
        "mode": mode,
        **detail,
        "stage1_ms": round(stage1, 1),
        "stage2_ms": round(stage2, 1),
        "stage2_ms_per_face": round(stage2 / max(1, len(faces)), 1),
        "total_ms": round(total, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch_imported": "torch" in sys.modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a model spec (default: the bundled model)")
    parser.add_argument("--image", nargs="*", help="photos to time (default: two composed 1080p photos)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--backends", nargs="*", default=[], help="also time the current path with these classifier backends"
    )
    parser.add_argument(
        "--baseline-commit", help="also time the current mode of this commit of the repository"
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODE", "MODEL", "IMAGE", "BACKEND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        mode, model, image, backend = args.worker
        print(json.dumps(worker(mode, model or None, image, args.repeats, backend)))
        return

    from aletheia.models.spec import DEFAULT_MODEL

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        model = args.model
        if model is None and not DEFAULT_MODEL.is_file():
            import torch

            from aletheia.models.efficientnet import EfficientNetAutoAttB4

            model = str(tmp_dir / "EfficientNetAutoAttB4_random.pth")
            torch.save(EfficientNetAutoAttB4().state_dict(), model)
        images = args.image or [str(p) for p in compose_photos(tmp_dir)]
        runs = [("seed", "torch"), ("current", "auto")] + [("batched", b) for b in args.backends]
        trees = {"current": None}
        if args.baseline_commit:
            trees[f"current@{args.baseline_commit}"] = tmp_dir / "baseline"
            trees[f"current@{args.baseline_commit}"].mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_commit],
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(tmp_dir / "baseline")], input=archive, check=True)
            runs.insert(2, (f"current@{args.baseline_commit}", "auto"))
        rows = []
        for image in images:
            for mode, backend in runs:
                command = [sys.executable, __file__, "--repeats", str(args.repeats), "--worker",
                           mode.split("@")[0], model or "", image, backend]  # fmt: skip
                env = {**os.environ, "ALETHEIA_BENCH_TREE": str(trees.get(mode) or "")}
                proc = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "mode": mode})
                print(json.dumps(rows[-1]), file=sys.stderr)
    seed_total = {row["image"]: row["total_ms"] for row in rows if row["mode"] == "seed"}
    baseline_total = {row["image"]: row["total_ms"] for row in rows if "@" in row["mode"]}
    for row in rows:
        row["speed_up"] = f"{seed_total[row['image']] / row['total_ms']:.1f}x" if row["total_ms"] else "-"
        if row["image"] in baseline_total and row["total_ms"]:
            row["vs_baseline"] = f"{baseline_total[row['image']] / row['total_ms']:.2f}x"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"CPU: {cpu_model()}; load average {load}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"model: {args.model or 'the bundled model'}; medians of {args.repeats} runs")  # fmt: skip
    header = ["image", "size", "faces", "mode", "backend", "tta", "tiles", "stage1_ms", "stage2_ms",
              "stage2_ms_per_face", "total_ms", "speed_up", "peak_rss_mb", "torch_imported"]  # fmt: skip
    if baseline_total:
        header.insert(header.index("speed_up") + 1, "vs_baseline")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    print("tiles: BlazeFace inputs per photo (seed: 128 px tiles over all levels; current: whole-image levels); "
          "speed_up: the seed-style total over this row's, same photo, same run; vs_baseline: likewise for "
          "--baseline-commit's current mode")  # fmt: skip


if __name__ == "__main__":
    main()
