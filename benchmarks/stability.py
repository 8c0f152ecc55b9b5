"""Test-time augmentation: what it costs per face, and how much steadier it makes the scores.

    .venv/bin/python benchmarks/stability.py [--model CHECKPOINT] [--data ../shared/data] [--faces 300]

Faces are drawn evenly from the development data's face folders (real and fake, every source), each resized to the
classifier's input as a whole-image crop (as `--assume-face` cuts it). For each augmentation mode (none, mirror,
mirror_zoom) it reports the classifier's time per face (batch 32, the median of `--repeats` runs, given as a ratio
to `none` measured in the same run: absolute times depend on the machine and its load), and the median and 90th
percentile of |score change| when the face is mirrored and when it is re-saved as JPEG quality 75, plus the share
of faces whose verdict flips across the threshold under each. Writes JSON to stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODES = ("none", "mirror", "mirror_zoom")


def load_faces(data: Path, count: int, size: int, seed: int = 0) -> np.ndarray:
    labels = pd.read_csv(data / "labels.csv")
    faces = labels[labels["path"].str.startswith("faces/")].copy()
    faces["folder"] = faces["path"].str.split("/").str[:3].str.join("/")
    per_folder = max(1, count // faces["folder"].nunique())
    picked = faces.groupby("folder", group_keys=False).apply(
        lambda g: g.sample(min(len(g), per_folder), random_state=seed)
    )
    crops = []
    for path in picked["path"].head(count):
        with Image.open(data / path) as image:
            crops.append(np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)))
    return np.stack(crops)


def jpeg75(crops: np.ndarray) -> np.ndarray:
    out = []
    for crop in crops:
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, "JPEG", quality=75)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="a model spec: bundled name, weights name or file (default: the bundled model)"
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from aletheia.pipeline import DeepfakeDetectorPipeline

    base = DeepfakeDetectorPipeline(args.model, batch_size=32)
    crops = load_faces(args.data, args.faces, base.config.input_size)
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    resaved = jpeg75(crops)
    threshold = base.threshold
    report: dict = {"faces": len(crops), "threshold": threshold, "model": base.model_label, "modes": {}}
    for mode in MODES:
        pipeline = base.with_tta(mode)
        pipeline.score_crops(crops[:32])  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = pipeline.score_crops(crops)
            times.append((time.perf_counter() - start) / len(crops))
        row = {"ms_per_face": 1000 * statistics.median(times)}
        for name, other in (("mirror", mirrored), ("jpeg75", resaved)):
            changed = np.abs(pipeline.score_crops(other) - scores)
            flips = ((pipeline.score_crops(other) >= threshold) != (scores >= threshold)).mean()
            row[f"{name}_median_change"] = float(np.median(changed))
            row[f"{name}_p90_change"] = float(np.quantile(changed, 0.9))
            row[f"{name}_verdict_flips"] = float(flips)
        report["modes"][mode] = row
    none = report["modes"]["none"]
    for row in report["modes"].values():
        row["cost_ratio_to_none"] = row["ms_per_face"] / none["ms_per_face"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
