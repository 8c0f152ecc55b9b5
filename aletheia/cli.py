"""The `aletheia` command. Thin: parses arguments, calls the library, prints.

Exit status: 0 when every input was processed, 1 when any input failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE = 0, 1, 2
# Video sampling bounds: beyond these a run only repeats frames or exhausts memory (`--fps 1e9` listed billions of
# frame times). The server caps frames at 256; the command line allows longer clips, within reason.
MAX_FRAMES, MAX_FPS = 1024, 60.0

NO_MODEL_HELP = (
    "no model given and no default model is bundled yet. Either download a published ISPL checkpoint "
    "(`aletheia weights download EfficientNetAutoAttB4_DFDC`, then `--model EfficientNetAutoAttB4_DFDC`) "
    "or pass a checkpoint file with `--model path/to/weights.pth`. `aletheia weights list` shows what exists."
)


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect", help="score every face in images and videos (files and folders, recursively)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders")
    p.add_argument("--output", "-o", type=Path, help="write results here instead of standard output")
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    p.add_argument("--model", help="model name, published weights name, or checkpoint file")
    p.add_argument("--arch", help="architecture of a checkpoint file, when it cannot be told from its keys")
    p.add_argument("--threshold", type=float, help="fake probability at or above which a face is called fake")
    p.add_argument(
        "--assume-face", action="store_true", help="skip detection; score each whole image as one face"
    )
    p.add_argument("--batch-size", type=int, default=32, help="faces per classifier batch (default 32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "onnx", "openvino"),
        default="auto",
        help="classifier runtime (default auto: ONNX Runtime on a CPU, torch on a GPU)",
    )
    p.add_argument("--face-policy", choices=("scale", "tight"), default="scale")
    p.add_argument(
        "--min-face-size", type=int, help="smallest face to look for, in pixels (default: adaptive)"
    )
    p.add_argument(
        "--frames",
        type=int,
        default=32,
        help=f"videos: frames sampled evenly (default 32, at most {MAX_FRAMES})",
    )
    p.add_argument(
        "--fps",
        type=float,
        help=f"videos: sample this many frames per second instead of --frames (at most {MAX_FPS:g})",
    )
    p.add_argument(
        "--track-strategy",
        choices=("mean_logit", "confident", "max"),
        default="mean_logit",
        help="videos: how a person's faces make one score: sigmoid of the mean logit (default), the DFDC winner's "
        "confident-frames rule, or the most fake-looking frame",
    )
    p.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="videos: write a timeline PNG of per-frame scores per person here",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run_detect)


def _add_faces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "faces", help="find faces only (no classifier): boxes, keypoints, and optionally the crops"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--output", "-o", type=Path, help="write JSON lines here instead of standard output")
    p.add_argument("--crops", type=Path, metavar="DIR", help="save each face crop here as PNG")
    p.add_argument("--face-policy", choices=("scale", "tight"), default="scale")
    p.add_argument("--size", type=int, default=224, help="crop size in pixels (default 224)")
    p.add_argument(
        "--min-face-size", type=int, help="smallest face to look for, in pixels (default: adaptive)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_run_faces)


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list or download published model weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    lst = wsub.add_parser("list", help="published checkpoints and whether they are cached")
    lst.set_defaults(handler=_run_weights_list)
    dl = wsub.add_parser("download", help="download a published checkpoint, verify its SHA-256 and cache it")
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.add_argument(
        "--cache-dir", type=Path, help="where to keep weights (default $ALETHEIA_CACHE or ~/.cache/aletheia)"
    )
    dl.add_argument(
        "--base-url", help="fetch from this mirror instead of the published URL (same file names)"
    )
    dl.set_defaults(handler=_run_weights_download)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered model architectures")
    p.set_defaults(handler=_run_models)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the web app (at /) and the REST API (under /api/v1/) in one server")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--model",
        action="append",
        metavar="MODEL",
        help="published weights name or checkpoint file; repeat to offer several (the first is the default); "
        "default: the bundled model",
    )
    p.add_argument("--arch", help="architecture of checkpoint files, when it cannot be told from their keys")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload accepted (default 25)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import torch

    from aletheia.models.checkpoints import CheckpointError
    from aletheia.models.loader import DEFAULT_MODEL
    from aletheia.serving import load_pipelines, serve

    if not args.model and not DEFAULT_MODEL.is_file():
        raise UsageError(NO_MODEL_HELP)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    try:
        pipelines = load_pipelines(args.model or [], arch=args.arch, device=args.device)
    except (CheckpointError, KeyError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc).strip("'\"")) from exc
    serve(pipelines, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 2**20))
    return EXIT_OK


def _usage_errors(handler):
    """Training commands: bad settings (pydantic, missing data) are usage errors; a failed run exits 1."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from exc
        except RuntimeError as exc:
            print(f"aletheia {args.command}: {exc}", file=sys.stderr)
            return EXIT_INPUT_FAILED

    return wrapped


def build_parser() -> argparse.ArgumentParser:
    from aletheia.cli_training import add_training_commands

    parser = argparse.ArgumentParser(prog="aletheia", description="Deepfake detection for faces in photos.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_detect(sub)
    _add_faces(sub)
    _add_weights(sub)
    _add_models(sub)
    _add_serve(sub)
    add_training_commands(sub, _usage_errors)
    return parser


# -- detect ------------------------------------------------------------------------------------------------------


def _make_pipeline(args: argparse.Namespace):
    import torch

    from aletheia.models.checkpoints import CheckpointError
    from aletheia.models.loader import DEFAULT_MODEL, is_checkpoint_path
    from aletheia.pipeline import DeepfakeDetectorPipeline

    if args.model is None and not DEFAULT_MODEL.is_file():
        raise UsageError(NO_MODEL_HELP)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.model is None:
        name, checkpoint = None, None  # the bundled default model
    elif is_checkpoint_path(args.model):
        name, checkpoint = args.arch, args.model
    else:
        name, checkpoint = args.model, None
    try:
        return DeepfakeDetectorPipeline(
            model_name=name,
            model_checkpoint=checkpoint,
            device=args.device,
            threshold=args.threshold,
            face_policy=args.face_policy,
            batch_size=args.batch_size,
            min_face_size=args.min_face_size,
            backend=args.backend,
        )
    except (CheckpointError, KeyError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc).strip("'\"")) from exc


@contextmanager
def _open_output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


CSV_COLUMNS = ("path", "kind", "score", "scores", "label", "threshold", "model", "n_faces", "faces", "error")
KIND_COLUMNS = (("manipulated", "manip."), ("generated", "gen."))  # per-kind scores, for models that have them


class _Writer:
    """Writes results as they come, so a long run can be followed and an interrupted one keeps what it did."""

    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out, self.fmt = out, fmt
        if fmt == "csv":
            self._csv = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
            self._csv.writeheader()
        elif fmt == "table":
            kinds = " ".join(f"{title:>6}" for _, title in KIND_COLUMNS)
            out.write(f"{'label':<8} {'score':>7} {kinds} {'faces':>5}  path\n")

    def write(self, record: dict) -> None:
        # In csv and table form a video's people (tracks) stand where a photo's faces do.
        faces = record["faces"] if "faces" in record else record["tracks"]
        if self.fmt == "jsonl":
            self.out.write(json.dumps(record) + "\n")  # JSON escapes what is not UTF-8
            self.out.flush()
            return
        record = {k: _printable(v) if isinstance(v, str) else v for k, v in record.items()}
        if self.fmt == "csv":
            row = {k: record.get(k) for k in CSV_COLUMNS if k in record}
            row["n_faces"] = len(faces)
            row["faces"] = json.dumps(faces)
            row["scores"] = json.dumps(record["scores"]) if "scores" in record else ""
            self._csv.writerow(row)
        else:
            score = "-" if record["score"] is None else f"{record['score']:.3f}"
            by_kind = record.get("scores", {})
            kinds = " ".join(f"{by_kind[k]:>6.3f}" if k in by_kind else f"{'-':>6}" for k, _ in KIND_COLUMNS)
            line = f"{record['label']:<8} {score:>7} {kinds} {len(faces):>5}  {record['path']}"
            if record["error"]:
                line += f"  ({record['error']})"
            self.out.write(line + "\n")
        self.out.flush()


def _printable(text: str) -> str:
    """A file name that is not UTF-8 (kept by Python as lone surrogates) with its odd bytes shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _detect_in_order(pipeline, videos, scanned: list, assume_face: bool) -> Iterator:
    """Every scanned input's result, in order: what the scan could not read is reported with its problem, the rest
    goes through predict_media in runs."""
    from itertools import groupby

    from aletheia.results import ImageResult
    from aletheia.video import VideoResult, is_video_path, predict_media

    for unreadable, group in groupby(scanned, key=lambda item: item.problem is not None):
        if not unreadable:
            paths = [item.path for item in group]
            yield from predict_media(pipeline, paths, assume_face=assume_face, videos=videos)
            continue
        for item in group:
            common = {"path": str(item.path), "threshold": pipeline.threshold, "model": pipeline.model_label}
            if is_video_path(item.path):
                yield VideoResult(**common, error=item.problem, strategy=videos.strategy)
            else:
                yield ImageResult(**common, error=item.problem)


def _run_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from aletheia.io import IMAGE_EXTENSIONS, scan_inputs
    from aletheia.video import VIDEO_EXTENSIONS, VideoDetector, VideoResult, plot_timeline

    scanned = scan_inputs(args.paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    if not scanned:
        raise UsageError(f"no image or video files found in {' '.join(args.paths)}")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES}, got {args.frames}")
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:
        raise UsageError(f"--fps must be above 0 and at most {MAX_FPS:g}, got {args.fps}")
    pipeline = _make_pipeline(args)
    videos = VideoDetector(pipeline, num_frames=args.frames, fps=args.fps, strategy=args.track_strategy)
    failed = 0
    with _open_output(args.output) as out:
        writer = _Writer(out, args.format)
        results = _detect_in_order(pipeline, videos, scanned, args.assume_face)
        bar = tqdm(results, total=len(scanned), unit="file", disable=args.no_progress, file=sys.stderr)
        for number, result in enumerate(bar):
            if result.error is not None:
                failed += 1
                bar.write(f"error: {result.error}", file=sys.stderr)
            elif args.plots and isinstance(result, VideoResult):
                plot_timeline(result, args.plots / f"{number:05d}_{Path(result.path).stem}.png")
            writer.write(result.to_json())
    if failed:
        print(f"{failed} of {len(scanned)} inputs could not be processed", file=sys.stderr)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _run_faces(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from aletheia.faces.extract import FaceDetector, crop_face
    from aletheia.io import InputError, load_image, scan_inputs
    from aletheia.results import FaceResult

    scanned = scan_inputs(args.paths)
    if not scanned:
        raise UsageError(f"no image files found in {' '.join(args.paths)}")
    detector = FaceDetector(min_face_size=args.min_face_size)
    if args.crops:
        args.crops.mkdir(parents=True, exist_ok=True)
    failed = 0
    with _open_output(args.output) as out:
        for index, item in enumerate(tqdm(scanned, unit="img", disable=args.no_progress, file=sys.stderr)):
            path = item.path
            record: dict = {"path": str(path), "faces": [], "error": None}
            try:
                if item.problem:
                    raise InputError(item.problem)
                image = load_image(path)
            except InputError as exc:
                failed += 1
                record["error"] = str(exc)
                print(f"error: {exc}", file=sys.stderr)
            else:
                for number, face in enumerate(detector.detect(image)):
                    entry = FaceResult(
                        face.box, face.keypoints, face.detection_score, score=float("nan")
                    ).to_json()
                    del entry["score"]
                    if args.crops:
                        crop = crop_face(image, face.box, args.face_policy, args.size)
                        crop_path = args.crops / f"{index:05d}_{path.stem}_face{number}.png"
                        cv2.imwrite(str(crop_path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
                        entry["crop"] = str(crop_path)
                    record["faces"].append(entry)
            out.write(json.dumps(record) + "\n")
    return EXIT_INPUT_FAILED if failed else EXIT_OK


# -- weights and models --------------------------------------------------------------------------------------------


def _run_weights_list(args: argparse.Namespace) -> int:
    from aletheia.models.checkpoints import PUBLISHED_WEIGHTS, cached_weights_path

    print(f"{'name':<32} {'architecture':<24} {'trained on':<10} cached")
    for name, entry in PUBLISHED_WEIGHTS.items():
        cached = "yes" if cached_weights_path(name).is_file() else "no"
        print(f"{name:<32} {entry.architecture:<24} {entry.dataset:<10} {cached}")
    return EXIT_OK


def _run_weights_download(args: argparse.Namespace) -> int:
    from aletheia.models.checkpoints import PUBLISHED_WEIGHTS, ChecksumError, download_weights

    unknown = [n for n in args.names if n not in PUBLISHED_WEIGHTS]
    if unknown:
        raise UsageError(f"unknown weights {', '.join(unknown)}; known: {', '.join(PUBLISHED_WEIGHTS)}")
    failed = 0
    for name in args.names:
        try:
            path = download_weights(name, cache_dir=args.cache_dir, base_url=args.base_url)
            print(f"{name}: {path}")
        except (ChecksumError, OSError) as exc:
            failed += 1
            print(f"error: {name}: {exc}", file=sys.stderr)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _run_models(args: argparse.Namespace) -> int:
    from aletheia.models.registry import get_config, list_models

    print(f"{'name':<28} {'input':>5} {'threshold':>9}")
    for name in list_models():
        config = get_config(name)
        print(f"{name:<28} {config.input_size:>5} {config.threshold:>9}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"aletheia {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
