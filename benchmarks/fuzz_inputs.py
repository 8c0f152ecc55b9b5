"""Fuzz the decoders: thousands of seeded image mutants and hundreds of odd videos; each must decode or raise
InputError, nothing else (issue 16's target: 0 other exceptions over >= 5,000 images and 300 videos).

    .venv/bin/python benchmarks/fuzz_inputs.py [--per-format 250] [--videos 300] [--pipeline 200] [--seed 1000]

Images: `--per-format` mutants of each seed file in tests/fuzzing.py (26 formats and variants), decoded half with
no budget (as the command line does) and half under the server's (service.DECODE_PIXELS). The first `--pipeline`
that decode are also scored by the bundled model's pipeline, so that what survives decoding cannot crash what
follows. Videos: `--videos` odd videos (sizes, lengths, rates, containers, codecs; a quarter truncated, a quarter
mutated, some with an unknown codec), 8 frames sampled from each. Seeds differ from the test suite's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzzing import check_image, check_video, mutants, odd_videos, seed_images  # noqa: E402


def fuzz_images(per_format: int, seed: int, pipeline_budget: int) -> dict:
    from aletheia.io import load_image_within
    from aletheia.serving.service import DECODE_PIXELS

    pipeline = None
    if pipeline_budget:
        from aletheia.pipeline import DeepfakeDetectorPipeline

        pipeline = DeepfakeDetectorPipeline(None, None, "cpu")
    outcomes, failures, scored = Counter(), [], 0
    seeds = seed_images()
    for number, (name, data) in enumerate(sorted(seeds.items())):
        rng = np.random.default_rng(seed + number)
        for index, mutant in enumerate(mutants(data, per_format, rng)):
            budget = DECODE_PIXELS if index % 2 else None
            try:
                outcome = check_image(mutant, budget)
                if outcome == "ok" and pipeline is not None and scored < pipeline_budget:
                    scored += 1
                    pipeline.predict(load_image_within(mutant, budget)[0])
            except Exception as exc:
                outcome = "other"
                failures.append({"format": name, "mutant": index, "error": f"{type(exc).__name__}: {exc}"})
                traceback.print_exc()
            outcomes[(name, outcome)] += 1
    totals = Counter()
    for (_, outcome), count in outcomes.items():
        totals[outcome] += count
    return {
        "formats": len(seeds),
        "images": sum(totals.values()),
        "outcomes": dict(totals),
        "scored_by_the_pipeline": scored,
        "other_exceptions": failures,
    }


def fuzz_videos(count: int, seed: int) -> dict:
    outcomes, failures = Counter(), []
    with tempfile.TemporaryDirectory() as folder:
        for path in odd_videos(Path(folder), count, np.random.default_rng(seed)):
            try:
                outcomes[check_video(path)] += 1
            except Exception as exc:
                outcomes["other"] += 1
                failures.append({"video": path.name, "error": f"{type(exc).__name__}: {exc}"})
                traceback.print_exc()
    return {"videos": sum(outcomes.values()), "outcomes": dict(outcomes), "other_exceptions": failures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-format", type=int, default=250)
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--pipeline", type=int, default=200, help="decoded mutants also scored (0: none)")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # PIL's warnings about corrupt EXIF blocks, by the thousand
    started = time.monotonic()
    images = fuzz_images(args.per_format, args.seed, args.pipeline)
    image_seconds = time.monotonic() - started
    videos = fuzz_videos(args.videos, args.seed)
    report = {
        "images": images,
        "image_seconds": round(image_seconds, 1),
        "videos": videos,
        "video_seconds": round(time.monotonic() - started - image_seconds, 1),
    }
    print(json.dumps(report, indent=1))
    sys.exit(1 if images["other_exceptions"] or videos["other_exceptions"] else 0)


if __name__ == "__main__":
    main()
