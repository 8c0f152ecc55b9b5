"""The training side of the `aletheia` command: prepare, train, tune, evaluate, runs. Every run is an MLRun run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_RUNS_ROOT = os.environ.get("ALETHEIA_RUNS", "runs")


def _runs_root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-root",
        type=Path,
        default=Path(DEFAULT_RUNS_ROOT),
        help=f"where run records and MLRun artifacts go (default {DEFAULT_RUNS_ROOT}, or $ALETHEIA_RUNS)",
    )


def _train_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML training config; flags below override it")
    p.add_argument("--data", nargs="+", help="prepared face folders")
    p.add_argument("--output", help="run folder for checkpoints")
    p.add_argument("--model", help="architecture (see `aletheia models`)")
    p.add_argument("--init-checkpoint", help="start from these weights")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--augment-strength", type=float)
    p.add_argument(
        "--equalise-quality", action="store_true", default=None, help="re-encode and resample every crop"
    )
    p.add_argument("--self-blend", type=float, help="fraction of fake draws made self-blended pseudo-fakes")
    p.add_argument(
        "--crop-jitter", type=float, help="shift and scale half the crops by up to this fraction of the crop"
    )
    p.add_argument(
        "--retouch", type=float, help="share of faces, real and fake alike, given a beauty filter on the face"
    )
    p.add_argument(
        "--blend-mask",
        choices=("ellipse", "landmarks"),
        help="self-blend mask: box ellipse or face-mesh hull (SBI)",
    )
    p.add_argument("--reframe", type=float, help="share of faces, real and fake alike, zoomed to a random framing")
    p.add_argument("--pseudo-generate", type=float, help="fraction of fake draws made pseudo-generated faces")
    p.add_argument(
        "--pseudo-decoders",
        help="decoders trained on real faces (scripts/train_face_decoder.py) to make the pseudo-generated faces",
    )
    p.add_argument("--exclude-method", nargs="+", dest="exclude_methods", help="methods left out of training")
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--max-val-samples", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (e.g. 1 each for two runs side by side)")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="bf16: faster on CPUs with AVX512-BF16, far slower without; auto: bf16 where the hardware has it",
    )
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"))
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None)
    _runs_root(p)


def add_training_commands(sub: argparse._SubParsersAction, handler_for) -> None:
    p = sub.add_parser("prepare", help="find, crop and cache faces for training; write the bias report")
    p.add_argument(
        "datasets", nargs="+", metavar="DATASET", help="labels CSV or folder (real/fake, FF++, DFDC)"
    )
    p.add_argument("--output", "-o", required=True, help="folder for crops and the face index")
    p.add_argument("--extra-real", nargs="+", default=[], metavar="DIR", help="folders of extra real faces")
    p.add_argument("--frames", type=int, default=32, help="frames per video (default 32)")
    p.add_argument("--face-policy", choices=("scale", "tight"), default="scale")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--max-faces", type=int, default=4, help="faces kept per image or frame (default 4)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--min-face-fraction",
        type=float,
        metavar="F",
        help="look only for faces at least this share of an image's longer side (0.25 for datasets of pre-cropped "
        "faces: about 13x faster; misses the small faces of whole photos and video frames; default: search every "
        "input for small faces too)",
    )
    p.add_argument("--limit", type=int, help="prepare at most this many inputs (a quick trial)")
    p.add_argument("--preview", type=Path, metavar="PNG", help="also write a grid of augmented samples here")
    _runs_root(p)
    p.set_defaults(handler=handler_for(_run_prepare))

    p = sub.add_parser("train", help="train a model on prepared faces (an MLRun run)")
    _train_overrides(p)
    p.set_defaults(handler=handler_for(_run_train))

    p = sub.add_parser("tune", help="hyper-parameter search with MLRun, then train the winner")
    _train_overrides(p)
    p.add_argument(
        "--param",
        action="append",
        required=True,
        metavar="NAME=V1,V2",
        help="a searched config key and its values, e.g. lr=1e-4,3e-4 (repeatable)",
    )
    p.add_argument("--strategy", choices=("grid", "random", "list"), default="grid")
    p.add_argument("--max-iterations", type=int, help="with random: how many points to try")
    p.add_argument("--selector", default="min.val_loss", help="how to pick the winner (default min.val_loss)")
    p.set_defaults(handler=handler_for(_run_tune))

    p = sub.add_parser("evaluate", help="metrics, curves and calibration of a checkpoint on prepared faces")
    p.add_argument(
        "--model",
        required=True,
        help="a model spec: checkpoint file, bundled model (aletheia-lite2) or weights name",
    )
    p.add_argument("--data", nargs="+", required=True, help="prepared face folders")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--split", choices=("val", "all"), default="all")
    p.add_argument("--run-dir", help="with --split val: the training run whose validation split to use")
    p.add_argument("--threshold", type=float)
    _runs_root(p)
    p.set_defaults(handler=handler_for(_run_evaluate))

    p = sub.add_parser(
        "calibrate", help="fit temperature and threshold on a run's validation split, store them"
    )
    p.add_argument(
        "--model", required=True, help="checkpoint to calibrate (e.g. RUN/best.pth, or aletheia-lite2)"
    )
    p.add_argument("--run-dir", required=True, help="its training run folder (fixes the validation split)")
    p.add_argument("--output", "-o", required=True, help="the calibrated checkpoint to write")
    p.add_argument(
        "--target-fpr", type=float, default=0.05, help="share of real faces flagged at the threshold"
    )
    p.add_argument(
        "--band-accuracy", type=float, default=0.95,
        help="the inconclusive band is the narrowest that leaves this share of the faces outside it right "
        "(balanced over real and fake; default 0.95)",
    )  # fmt: skip
    p.add_argument(
        "--tta", choices=("none", "mirror", "mirror_zoom"), default="mirror",
        help="test-time augmentation to fit with: the one inference will use (default mirror, as inference's)",
    )  # fmt: skip
    p.add_argument(
        "--half-precision", action="store_true",
        help="store the weights as float16 (half the file; calibrated as rounded, loaded into the float model)",
    )  # fmt: skip
    p.set_defaults(handler=handler_for(_run_calibrate))

    p = sub.add_parser("runs", help="list or show recorded runs")
    rsub = p.add_subparsers(dest="runs_command", required=True)
    lst = rsub.add_parser("list")
    _runs_root(lst)
    lst.set_defaults(handler=handler_for(_run_runs_list))
    show = rsub.add_parser("show")
    show.add_argument("uid", help="run id (a unique prefix will do)")
    _runs_root(show)
    show.set_defaults(handler=handler_for(_run_runs_show))


def _run_prepare(args: argparse.Namespace) -> int:
    from aletheia.data.prepare import PrepareConfig, check_resumable
    from aletheia.training.tracking import run_handler

    params = {"datasets": [str(d) for d in args.datasets], "output": str(Path(args.output).resolve()),
              "extra_real": [str(d) for d in args.extra_real], "frames_per_video": args.frames,
              "face_policy": args.face_policy, "size": args.size, "max_faces": args.max_faces,
              "workers": args.workers, "limit": args.limit, "min_face_fraction": args.min_face_fraction}  # fmt: skip
    check_resumable(PrepareConfig(**params))  # before MLRun: its run record can lose the error's message
    record = run_handler("prepare", params, args.runs_root)
    print(json.dumps({"run": record.uid, **record.results}, indent=1, default=str))
    if args.preview:
        _write_preview(Path(args.output), args.preview)
        print(f"augmentation preview: {args.preview}")
    return 0


def _write_preview(prepared: Path, out: Path, count: int = 6) -> None:
    from aletheia.data.augment import preview_grid, training_augmentation
    from aletheia.data.prepare import load_faces
    from aletheia.io import load_image

    faces = load_faces(prepared)
    sample = faces.groupby("label", group_keys=False).apply(
        lambda g: g.sample(min(len(g), count // 2), random_state=0)
    )
    preview_grid([load_image(p) for p in sample["crop"]], out, training_augmentation())


def _config_values(args: argparse.Namespace) -> dict:
    from aletheia.training.config import TrainConfig

    keys = ["data", "output", "model", "init_checkpoint", "epochs", "batch_size", "lr", "augment_strength",
            "equalise_quality", "crop_jitter", "reframe", "retouch", "self_blend", "blend_mask", "pseudo_generate", "pseudo_decoders", "exclude_methods", "steps_per_epoch", "max_val_samples", "num_workers", "seed", "threads", "precision", "lr_schedule", "resume"]  # fmt: skip
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    config = TrainConfig.from_yaml(args.config, **overrides) if args.config else TrainConfig(**overrides)
    config = config.model_copy(update={"data": [str(Path(d).resolve()) for d in config.data],
                                       "output": str(Path(config.output).resolve())})  # fmt: skip
    return config.model_dump()


def _run_train(args: argparse.Namespace) -> int:
    from aletheia.training.tracking import run_handler

    record = run_handler("train", {"config": _config_values(args)}, args.runs_root)
    print(json.dumps({"run": record.uid, **record.results}, indent=1, default=str))
    return 0


def _parse_param(text: str) -> tuple[str, list]:
    import yaml

    name, _, values = text.partition("=")
    if not name or not values:
        raise ValueError(f"--param {text!r}: write NAME=V1,V2,...")
    return name.strip().replace("-", "_"), [yaml.safe_load(v) for v in values.split(",")]


def _run_tune(args: argparse.Namespace) -> int:
    from aletheia.training.config import TrainConfig
    from aletheia.training.tracking import run_handler

    config = _config_values(args)
    grid = dict(_parse_param(p) for p in args.param)
    unknown = set(grid) - set(TrainConfig.model_fields)
    if unknown:
        raise ValueError(f"--param: {', '.join(sorted(unknown))} not a training setting; see TrainConfig")
    if args.strategy == "list" and len({len(v) for v in grid.values()}) != 1:
        raise ValueError("--strategy list needs the same number of values for every --param")
    search = run_handler("train", {"config": config, "log_artifacts": False}, args.runs_root, name="tune",
                         hyper_params=grid, selector=args.selector, strategy=args.strategy,
                         max_iterations=args.max_iterations)  # fmt: skip
    import pandas as pd

    iterations = pd.read_csv(next(Path(search.output_path).rglob("iteration_results.csv")))
    best_row = iterations[iterations["iter"] == search.results["best_iteration"]].iloc[0]
    best = {k: _plain(best_row[f"param.{k}"]) for k in grid}
    print(iterations.to_string(index=False))
    print(f"best ({args.selector}): {best}")
    winner = TrainConfig(**{**config, **best})
    winner = winner.model_copy(update={"output": str(Path(config["output"]) / "best")})
    final = run_handler("train", {"config": winner.model_dump()}, args.runs_root, name="tune-winner")
    print(json.dumps({"search_run": search.uid, "winner_run": final.uid, "best_params": best,
                      **final.results}, indent=1, default=str))  # fmt: skip
    return 0


def _plain(value):
    """numpy scalars from the results table -> Python values (pydantic and YAML want these)."""
    return value.item() if hasattr(value, "item") else value


def _run_evaluate(args: argparse.Namespace) -> int:
    from aletheia.models.spec import resolve_model_spec
    from aletheia.training.tracking import run_handler

    # A spec that names the same model wherever the run executes: files by absolute path.
    params = {"model": resolve_model_spec(args.model).argument, "data": [str(Path(d).resolve()) for d in args.data],
              "output": str(Path(args.output).resolve()), "split": args.split, "threshold": args.threshold,
              "run_dir": str(Path(args.run_dir).resolve()) if args.run_dir else None}  # fmt: skip
    record = run_handler("evaluate", params, args.runs_root)
    print(json.dumps({"run": record.uid, **record.results}, indent=1, default=str))
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from aletheia.training.calibrate import calibrate

    if not 0.5 < args.band_accuracy < 1.0:
        raise ValueError(f"--band-accuracy must be between 0.5 and 1, got {args.band_accuracy}")
    summary = calibrate(args.model, args.run_dir, args.output, args.target_fpr, tta=args.tta,
                        band_accuracy=args.band_accuracy, half_precision=args.half_precision)  # fmt: skip
    print(json.dumps(summary, indent=1, default=str))
    v = summary["verdicts"]
    print(f"inconclusive band {v['band'][0]:.3f}-{v['band'][1]:.3f} around threshold {summary['threshold']:.3f} "
          f"(tta {v['tta']}): {v['share_inconclusive']:.1%} of {summary['validation_faces']} validation faces "
          f"inconclusive ({v['share_in_band']:.1%} in the band, {v['share_unstable']:.1%} unstable); accuracy "
          f"outside {v['accuracy_outside']:.1%}, balanced {v['balanced_accuracy_outside']:.1%}"
          + ("" if v["target_met"] else f" (the {args.band_accuracy:.0%} target could not be met)"))  # fmt: skip
    return 0


def _run_runs_list(args: argparse.Namespace) -> int:
    from aletheia.training.tracking import list_records

    records = list_records(args.runs_root)
    print(f"{'uid':<34} {'name':<18} {'state':<10} {'start':<27} results")
    for r in records:
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in list(r.results.items())[:4]}
        print(f"{r.uid:<34} {r.name:<18} {r.state:<10} {r.start[:26]:<27} {brief}")
    if not records:
        print(f"(no runs recorded under {args.runs_root})")
    return 0


def _run_runs_show(args: argparse.Namespace) -> int:
    import yaml

    from aletheia.training.tracking import find_record

    print(yaml.safe_dump(find_record(args.runs_root, args.uid).__dict__, sort_keys=False))
    return 0
