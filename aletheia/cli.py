"""The `aletheia` command. Thin: parses arguments, calls the library, prints.

Exit status: 0 when every input was processed, 1 when any input failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
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


# Top-level modules of the `train` extra (pyproject.toml): a command that needs one says how to install it.
TRAINING_EXTRAS = frozenset({"torch", "efficientnet_pytorch", "efficientnet_lite_pytorch", "albumentations", "mlrun",
                             "dask", "distributed", "matplotlib", "sklearn", "scipy", "onnx", "openvino"})  # fmt: skip


MODEL_HELP = (
    "a bundled model's name (aletheia-lite2, the default), published weights (`aletheia weights list`), or a "
    "checkpoint file (.pth, or .onnx with its .onnx.json)"
)


class UsageError(Exception):
    """A mistake in how the command was called (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with short errors: the mistake, a "did you mean" when a known option or command is close, and where
    help is; not the whole usage text."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._subcommand_parser(parsed)
            (command or self).error(_unrecognised(extras, command or self))
        return parsed

    def _subcommand_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser | None:
        """The parser of the (sub)command that was run: its options are the ones a mistyped flag was meant for."""
        parser: argparse.ArgumentParser | None = None
        actions = self._subparsers._group_actions if self._subparsers else []
        for action in actions:
            chosen = getattr(parsed, action.dest, None)
            parser = action.choices.get(chosen) if isinstance(action.choices, dict) else None
            if parser is not None and parser._subparsers:
                return ArgumentParser._subcommand_parser(parser, parsed) or parser
        return parser

    def error(self, message: str):  # type: ignore[override]
        import difflib
        import re

        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:
            choices = re.findall(r"'?([\w.-]+)'?", wrong.group(2))
            close = difflib.get_close_matches(wrong.group(1), choices, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nSee '{self.prog} --help'.\n")


def _unrecognised(extras: list[str], parser: argparse.ArgumentParser) -> str:
    import difflib

    options = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    parts = []
    for extra in extras:
        flag = extra.split("=", 1)[0]
        close = difflib.get_close_matches(flag, options, n=1) if flag.startswith("-") else []
        parts.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    return f"unrecognized argument{'s' if len(extras) > 1 else ''}: {' '.join(parts)}"


def _add_detect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect", help="score every face in images and videos (files and folders, recursively)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders")
    p.add_argument("--output", "-o", type=Path, help="write results here instead of standard output")
    p.add_argument(
        "--format",
        choices=("jsonl", "csv", "table", "parquet"),
        default="jsonl",
        help="jsonl (default), csv, table, or parquet (one row per input and face; needs --output)",
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume",
        action="store_true",
        help="OUT exists: skip the inputs it already has and append the rest (jsonl, csv, parquet)",
    )
    existing.add_argument("--overwrite", action="store_true", help="OUT exists: replace it")
    p.add_argument(
        "--row-group-size",
        type=int,
        default=1000,
        metavar="N",
        help="parquet: inputs per row group (default 1000); until then they wait in OUT.journal",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the scan on a Dask cluster: a scheduler address (tcp://host:8786), or local:N for a "
        "LocalCluster of N worker processes on this machine",
    )
    p.add_argument(
        "--shard-size", type=int, default=32, metavar="N", help="--dask: inputs per task (default 32)"
    )
    p.add_argument("--model", help=MODEL_HELP)
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
    _add_tta(p)
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


def _add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        choices=("none", "mirror", "mirror_zoom"),
        default=None,
        help="test-time augmentation: score each face also mirrored (the default for photos; mirror_zoom: and "
        "zoomed) and average in logit space; a face whose views disagree is inconclusive. none: one view, half the "
        "classifier time (the default for videos, whose people's scores average their frames)",
    )


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="score images and videos and write one self-contained HTML report (printable to PDF)"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders")
    p.add_argument("--output", "-o", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--arch", help="architecture of a checkpoint file, when it cannot be told from its keys")
    p.add_argument("--threshold", type=float, help="fake probability at or above which a face is called fake")
    p.add_argument(
        "--assume-face", action="store_true", help="skip detection; score each whole image as one face"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    _add_tta(p)
    p.add_argument("--frames", type=int, default=32, help="videos: frames sampled evenly (default 32)")
    p.add_argument(
        "--track-strategy", choices=("mean_logit", "confident", "max"), default="mean_logit",
        help="videos: how a person's faces make one score (default mean_logit)",
    )  # fmt: skip
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    import torch

    from aletheia.io import IMAGE_EXTENSIONS, InputError, load_image, walk_inputs
    from aletheia.models.spec import CheckpointError
    from aletheia.report import ReportItem, model_card_limits, write_report
    from aletheia.scan import ScanSettings, build_detectors, detect_in_order
    from aletheia.video import VIDEO_EXTENSIONS, VideoResult

    inputs = list(walk_inputs(args.paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
    if not inputs:
        raise UsageError(f"no image or video files found in {' '.join(args.paths)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES}, got {args.frames}")
    if args.output.is_dir():
        raise UsageError(f"{args.output} is a folder; --output names the HTML file to write")
    _model_spec(args.model, args.arch)
    settings = ScanSettings(model=args.model, arch=args.arch, device=args.device, threshold=args.threshold,
                            assume_face=args.assume_face, frames=args.frames, track_strategy=args.track_strategy,
                            tta=args.tta, threads=1 if len(inputs) > 1 and args.device == "cpu" else None)  # fmt: skip
    try:
        pipeline, videos = build_detectors(settings)
    except (CheckpointError, KeyError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc).strip("'\"")) from exc
    items = []
    for result in detect_in_order(pipeline, videos, inputs, args.assume_face):
        image = None
        if not isinstance(result, VideoResult) and result.error is None:
            try:
                image = load_image(result.path)
            except InputError:  # changed since it was scored: the report shows no picture for it
                image = None
        if result.error is not None:
            print(f"error: {_printable(result.error)}", file=sys.stderr)
        items.append(ReportItem(result, image))
    write_report(args.output, items, model_card_limits(pipeline.config.weights_path))
    failed = sum(item.result.error is not None for item in items)
    flagged = sum(item.result.label == "fake" for item in items)
    print(f"aletheia report: {args.output}: {flagged} of {len(items)} inputs flagged fake, {failed} failed",
          file=sys.stderr)  # fmt: skip
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _add_faces(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "faces", help="find faces only (no classifier): boxes, keypoints, and optionally the crops"
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders")
    p.add_argument("--output", "-o", type=Path, help="write JSON lines here instead of standard output")
    p.add_argument("--crops", type=Path, metavar="DIR", help="save each face crop here as PNG")
    p.add_argument(
        "--frames",
        type=int,
        default=32,
        help=f"videos: frames sampled evenly (default 32, at most {MAX_FRAMES})",
    )
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
        help="a bundled model's name, published weights or a checkpoint file (.pth, or .onnx with its .json); "
        "repeat to offer several (the first is the default); default: the bundled model",
    )
    p.add_argument("--arch", help="architecture of checkpoint files, when it cannot be told from their keys")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload accepted (default 25)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from aletheia.serving import load_pipelines, serve
    from aletheia.serving.server import listen

    for spec in args.model or [None]:
        _model_spec(spec, args.arch)
    _check_device(args.device)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    try:
        listening = listen(args.host, args.port)  # before the models load: a port in use is told at once
    except OSError as exc:
        raise UsageError(exc.strerror or str(exc)) from exc
    try:
        pipelines = load_pipelines(args.model or [], arch=args.arch, device=args.device)
    except (KeyError, ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
        listening.close()
        raise UsageError(str(exc).strip("'\"")) from exc
    serve(pipelines, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 2**20),
          sock=listening)  # fmt: skip
    return EXIT_OK


def _model_spec(spec: str | None, arch: str | None):
    """The model a --model names (none: the default bundled one), resolved as everywhere (aletheia.models.spec)
    before any model loads; a spec that names nothing usable is a usage error that says what there is."""
    from aletheia.models.spec import CheckpointError, resolve_model_spec

    try:
        return resolve_model_spec(spec, arch=arch)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from exc


def _check_device(device: str) -> None:
    """A CUDA device must exist; torch is imported only to ask (on the CPU detection needs no torch)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here; use --device cpu")


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
    import aletheia
    from aletheia.cli_training import add_training_commands

    parser = ArgumentParser(prog="aletheia", description="Deepfake detection for faces in photos and videos.")
    parser.add_argument("--version", action="version", version=f"aletheia {aletheia.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_detect(sub)
    _add_faces(sub)
    _add_weights(sub)
    _add_models(sub)
    _add_serve(sub)
    _add_report(sub)
    add_training_commands(sub, _usage_errors)
    return parser


# -- detect ------------------------------------------------------------------------------------------------------


def _scan_settings(args: argparse.Namespace):
    """The detect command's settings, checked; the models load later (here, or on each Dask worker)."""
    from aletheia.scan import ScanSettings

    _check_device(args.device)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES}, got {args.frames}")
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:
        raise UsageError(f"--fps must be above 0 and at most {MAX_FPS:g}, got {args.fps}")
    if args.row_group_size < 1 or args.shard_size < 1:
        raise UsageError("--row-group-size and --shard-size must be at least 1")
    if args.format == "parquet" and args.output is None:
        raise UsageError("--format parquet needs --output")
    if args.dask and args.plots:
        raise UsageError("--plots draws in this process; it cannot be combined with --dask")
    threads = _session_threads(args.paths, args.device, args.backend)
    if args.dask and args.dask.startswith("local:"):
        from aletheia.scan.distributed import local_threads

        try:
            workers = int(args.dask.split(":", 1)[1])
        except ValueError:
            workers = 0
        if workers < 1:
            raise UsageError(f"--dask local:N needs a number of workers of at least 1, got {args.dask}")
        threads = local_threads(workers)
    _model_spec(args.model, args.arch)  # the settings first: they are told before a model is looked for
    return ScanSettings(
        model=args.model, arch=args.arch, device=args.device, threshold=args.threshold,
        face_policy=args.face_policy, batch_size=args.batch_size, min_face_size=args.min_face_size,
        backend=args.backend, assume_face=args.assume_face, frames=args.frames, fps=args.fps,
        track_strategy=args.track_strategy, threads=threads, tta=args.tta,
    )  # fmt: skip


def _session_threads(paths: list[str], device: str, backend: str) -> int | None:
    """ONNX Runtime threads per session: one when several inputs are scored on the CPU, so that a thread per core
    decodes and searches photos (aletheia.overlap.default_workers) instead of one thread whose every network call is
    spread over the cores (which cost 15-20% more CPU per photo on 2 cores); None, the default, for one input, whose
    wait is shortest with every core on each call."""
    from itertools import islice

    from aletheia.io import IMAGE_EXTENSIONS, walk_inputs
    from aletheia.video import VIDEO_EXTENSIONS

    if not device.startswith("cpu") or backend == "torch":
        return None
    several = len(list(islice(walk_inputs(paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS), 2))) > 1
    return 1 if several else None


@contextmanager
def _models_ready(settings, dask: str | None) -> Iterator[dict]:
    """Loads the models (here, or on every worker of the cluster) before any output is touched: a model that cannot
    load is a usage error and leaves no file behind. Yields run_scan's `detectors=` or `client=`."""
    from aletheia.scan import build_detectors

    loading = (KeyError, ValueError, FileNotFoundError)  # a CheckpointError is a ValueError
    if not dask:
        try:
            detectors = build_detectors(settings)
        except loading as exc:
            raise UsageError(str(exc).strip("'\"")) from exc
        yield {"detectors": detectors}
        return
    from aletheia.scan.distributed import register_detectors, start_client

    try:
        client, cluster = start_client(dask)
    except (OSError, ValueError) as exc:  # a TimeoutError is an OSError
        raise UsageError(f"--dask {dask}: cannot reach a Dask scheduler there ({exc})") from exc
    try:
        try:
            register_detectors(client, settings)
        except loading as exc:
            raise UsageError(str(exc).strip("'\"")) from exc
        yield {"client": client}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from aletheia.io import IMAGE_EXTENSIONS, walk_inputs
    from aletheia.scan import OutputExists, OutputUnreadable, check_output, open_sink, run_scan
    from aletheia.video import VIDEO_EXTENSIONS, VideoResult, plot_timeline

    if next(walk_inputs(args.paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS), None) is None:
        raise UsageError(f"no image or video files found in {' '.join(args.paths)}")
    settings = _scan_settings(args)
    try:
        check_output(args.output, args.format, args.resume, args.overwrite)  # before any model loads
    except OutputExists as exc:
        raise UsageError(str(exc)) from exc
    with _models_ready(settings, args.dask) as engine:
        try:
            sink = open_sink(args.output, args.format, resume=args.resume, overwrite=args.overwrite,
                             row_group_size=args.row_group_size)  # fmt: skip
        except (OutputExists, OutputUnreadable) as exc:
            raise UsageError(str(exc)) from exc
        bar = tqdm(unit="file", disable=args.no_progress, file=sys.stderr)
        earlier_models = set(getattr(sink, "models", ())) - {""}
        warned = False
        number = 0

        def on_batch(records: list[dict], results: list | None) -> None:
            nonlocal number, warned
            for index, record in enumerate(records):
                if record["error"] is not None:
                    bar.write(f"error: {_printable(record['error'])}", file=sys.stderr)
                elif args.plots and results is not None and isinstance(results[index], VideoResult):
                    plot_timeline(
                        results[index], args.plots / f"{number:05d}_{Path(record['path']).stem}.png"
                    )
                if earlier_models and not warned and record["model"] not in earlier_models:
                    warned = True
                    bar.write(f"warning: {args.output} holds results of {', '.join(sorted(earlier_models))}; "
                              f"this run appends results of {record['model']}", file=sys.stderr)  # fmt: skip
                number += 1
            bar.update(len(records))

        options = {"shard_size": args.shard_size} if args.dask else {}
        try:
            summary = run_scan(args.paths, sink, settings, on_batch=on_batch, **engine, **options)
        finally:
            sink.close()
            bar.close()
    _report_not_media(summary.not_media, summary.not_media_paths)
    if summary.failed:
        print(f"{summary.failed} of {summary.done} inputs could not be processed", file=sys.stderr)
    print(f"aletheia detect: {summary.line()}", file=sys.stderr)
    return EXIT_INPUT_FAILED if summary.failed else EXIT_OK


@contextmanager
def _open_output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        yield handle


def _printable(text: str) -> str:
    """A file name that is not UTF-8 (kept by Python as lone surrogates) with its odd bytes shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _run_faces(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from aletheia.faces.extract import FaceDetector
    from aletheia.io import IMAGE_EXTENSIONS, InputError, load_image, scan_inputs
    from aletheia.video import VIDEO_EXTENSIONS, VideoReader, is_video_path

    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES}, got {args.frames}")
    others: list[Path] = []
    scanned = scan_inputs(args.paths, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS, on_other=others.append)
    _report_not_media(len(others), [str(p) for p in others])
    if not scanned:
        raise UsageError(f"no image or video files found in {' '.join(args.paths)}")
    detector = FaceDetector(min_face_size=args.min_face_size)
    if args.crops:
        args.crops.mkdir(parents=True, exist_ok=True)
    failed = 0
    with _open_output(args.output) as out:
        for index, item in enumerate(tqdm(scanned, unit="file", disable=args.no_progress, file=sys.stderr)):
            path = item.path
            video = is_video_path(path)
            record: dict = {"path": str(path), "kind": "video" if video else "image"}
            record |= {"frames": []} if video else {"faces": []}
            record["error"] = None
            stem = f"{index:05d}_{path.stem}"
            try:
                if item.problem:
                    raise InputError(item.problem)
                if video:
                    with VideoReader(path) as reader:
                        for frame in reader.frames(reader.sample_times(args.frames)):
                            faces = _faces_of(detector, frame.image, args, f"{stem}_frame{frame.index}")
                            record["frames"].append({"index": frame.index, "time": round(frame.time, 3),
                                                     "faces": faces})  # fmt: skip
                else:
                    record["faces"] = _faces_of(detector, load_image(path), args, stem)
            except InputError as exc:
                failed += 1
                record["error"] = str(exc)
                print(f"error: {exc}", file=sys.stderr)
            out.write(json.dumps(record) + "\n")
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _faces_of(detector, image, args: argparse.Namespace, crop_stem: str) -> list[dict]:
    """The faces of one image (or video frame) as JSON, each crop saved under --crops when asked."""
    import cv2

    from aletheia.faces.extract import crop_face
    from aletheia.results import FaceResult

    faces = []
    for number, face in enumerate(detector.detect(image)):
        entry = FaceResult(face.box, face.keypoints, face.detection_score, score=float("nan")).to_json()
        del entry["score"]
        if args.crops:
            crop = crop_face(image, face.box, args.face_policy, args.size)
            crop_path = args.crops / f"{crop_stem}_face{number}.png"
            cv2.imwrite(str(crop_path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            entry["crop"] = str(crop_path)
        faces.append(entry)
    return faces


def _report_not_media(count: int, named: list[str]) -> None:
    """One line per file passed over in the folders given (the first few), so that none is skipped silently."""
    from aletheia.scan.engine import NOT_MEDIA_NAMED

    for path in named[:NOT_MEDIA_NAMED]:
        print(f"skipped: {_printable(path)}: not an image or video", file=sys.stderr)
    if count > NOT_MEDIA_NAMED:
        print(
            f"skipped: {count - NOT_MEDIA_NAMED:,} more files that are not images or videos", file=sys.stderr
        )


# -- weights and models --------------------------------------------------------------------------------------------


def _run_weights_list(args: argparse.Namespace) -> int:
    from aletheia.models.published import PUBLISHED_WEIGHTS, cached_weights_path

    print(f"{'name':<32} {'architecture':<24} {'trained on':<10} cached")
    for name, entry in PUBLISHED_WEIGHTS.items():
        if entry.loadable:
            cached = "yes" if cached_weights_path(name).is_file() else "no"
            print(f"{name:<32} {entry.architecture:<24} {entry.dataset:<10} {cached}")
    unsupported = [name for name, entry in PUBLISHED_WEIGHTS.items() if not entry.loadable]
    if unsupported:
        print(
            f"\nNot offered: {', '.join(unsupported)} (published, but their architecture is not supported yet)"
        )
    return EXIT_OK


def _run_weights_download(args: argparse.Namespace) -> int:
    from aletheia.models.published import PUBLISHED_WEIGHTS, ChecksumError, download_weights

    offered = [name for name, entry in PUBLISHED_WEIGHTS.items() if entry.loadable]
    unknown = [n for n in args.names if n not in PUBLISHED_WEIGHTS]
    if unknown:
        raise UsageError(f"unknown weights {', '.join(unknown)}; known: {', '.join(offered)}")
    unsupported = [n for n in args.names if not PUBLISHED_WEIGHTS[n].loadable]
    if unsupported:  # refused before anything is fetched: they could not be loaded afterwards
        raise UsageError(
            f"{', '.join(unsupported)}: the {PUBLISHED_WEIGHTS[unsupported[0]].architecture} architecture is not "
            f"supported yet, so these weights cannot be used; available: {', '.join(offered)}"
        )
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
    from aletheia.models.checkpoints import infer_architecture, read_checkpoint
    from aletheia.models.registry import get_config, list_models
    from aletheia.models.spec import DEFAULT_MODEL, bundled_models

    print(f"{'name':<30} {'input':>5} {'threshold':>9}  what")
    for name, path in bundled_models().items():
        # A bundled model's operating point is stored with it (chosen on validation), not the architecture's.
        state, metadata = read_checkpoint(path)
        config = get_config(metadata.get("architecture") or infer_architecture(state))
        threshold = float(metadata.get("threshold", config.threshold))
        role = "used by default" if path == DEFAULT_MODEL else "--model " + name
        print(f"{name:<30} {config.input_size:>5} {threshold:>9.3f}  "
              f"a bundled trained model, {role} ({config.name})")  # fmt: skip
    for name in list_models():
        config = get_config(name)
        print(
            f"{name:<30} {config.input_size:>5} {config.threshold:>9.3f}  architecture (weights: --model FILE)"
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"aletheia {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        if exc.name not in TRAINING_EXTRAS:
            raise
        print(f"aletheia {args.command}: error: this needs {exc.name}, part of the training extras: "
              'pip install "aletheia[train]" (detection on a CPU with the bundled model needs none)', file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
