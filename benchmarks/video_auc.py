"""Video-level ROC AUC of a model on the labelled development videos, for every track strategy at once.

    .venv/bin/python benchmarks/video_auc.py --model CHECKPOINT [--data ../shared/data] [--frames 32]
        [--output per_video.csv] [--threads 1]

Labels come from `labels.csv` (rows whose path is a video) and from DFDC's `metadata.json` files beside the videos
(for videos that `labels.csv` leaves out). Each video is scored once; the per-face logits are then aggregated with
every strategy (a video's score is its highest track score). Videos with no face or an error are listed and left out
of the AUC. Groups are the first folder under videos/, up to any dash (dfdc-samples counts as dfdc).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def video_labels(data: Path) -> dict[Path, str]:
    """Video path -> "fake" / "real", from labels.csv, then metadata.json files for videos it does not list."""
    from aletheia.video import is_video_path

    labels: dict[Path, str] = {}
    with (data / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = data / row["path"]
            if is_video_path(path) and path.is_file():
                labels[path] = row["label"].strip().lower()
    for metadata in sorted((data / "videos").rglob("metadata.json")):
        for name, entry in json.loads(metadata.read_text()).items():
            path = metadata.parent / name
            if path.is_file() and path not in labels:
                labels[path] = str(entry["label"]).strip().lower()
    return labels


def video_score(result, strategy: str) -> float | None:
    """A video's score under `strategy`, from the logits kept in its result."""
    from aletheia.video import score_track

    scores = []
    for track in result.tracks:
        logits = [face.logit for frame in result.frames for face in frame.faces if face.track == track.id]
        scores.append(score_track(logits, strategy))
    return max(scores, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help="a model spec: checkpoint file, bundled model or published weights name",
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"development data (default {DEFAULT_DATA})"
    )
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per video (default 32)")
    parser.add_argument("--output", type=Path, help="also write one CSV row per video here")
    parser.add_argument(
        "--threads", type=int, help="torch / ONNX Runtime threads (1 is fastest on a busy machine)"
    )
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from aletheia.evaluation import binary_metrics
    from aletheia.pipeline import DeepfakeDetectorPipeline
    from aletheia.video import TRACK_STRATEGIES, VideoDetector

    labels = video_labels(args.data)
    if not labels:
        sys.exit(f"no labelled videos under {args.data}")
    pipeline = DeepfakeDetectorPipeline(args.model)
    detector = VideoDetector(pipeline, num_frames=args.frames)
    rows = []
    for result in detector.predict_many(sorted(labels)):
        path = Path(result.path)
        row = {
            "video": str(path.relative_to(args.data)),
            "group": path.relative_to(args.data / "videos").parts[0].split("-")[0],
            "label": labels[path],
            "outcome": result.label,
            "tracks": len(result.tracks),
        }
        row.update({s: video_score(result, s) for s in TRACK_STRATEGIES})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with args.output.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    scored = [r for r in rows if r["mean_logit"] is not None]
    left_out = [f"{r['video']} ({r['outcome']})" for r in rows if r["mean_logit"] is None]
    print(f"model: {pipeline.model_label}, {args.frames} frames per video, threshold {pipeline.threshold}")
    print("| group | n | n_fake | n_real | " + " | ".join(f"auc {s}" for s in TRACK_STRATEGIES) + " |")
    print("|---|---|---|---|" + "---|" * len(TRACK_STRATEGIES))
    for group in sorted({r["group"] for r in scored}) + ["all"]:
        subset = [r for r in scored if group in ("all", r["group"])]
        metrics = {
            s: binary_metrics([r["label"] for r in subset], [r[s] for r in subset]) for s in TRACK_STRATEGIES
        }
        first = next(iter(metrics.values()))
        aucs = " | ".join("-" if m["auc"] is None else f"{m['auc']:.3f}" for m in metrics.values())
        print(f"| {group} | {first['n']} | {first['n_fake']} | {first['n_real']} | {aucs} |")
    if left_out:
        print(f"left out (no face or error): {', '.join(left_out)}")


if __name__ == "__main__":
    main()
