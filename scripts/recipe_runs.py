"""Run the default model's recipe (stages 1-4) for several backbones side by side, e.g. on one GPU.

    python scripts/recipe_runs.py --data outputs/default-model/prepared --work outputs/recipe-runs \
        --run lite0=EfficientNetAutoAttLite0 --run lite2=EfficientNetAutoAttLite2 \
        --run lite2-lomo=EfficientNetAutoAttLite2:lomo --device cuda --workers 5 --deadline-minutes 60

Each run trains the four stages of `scripts/train_default_model.sh` in order (configs/default_model_base.yaml,
default_model.yaml, default_model_kinds.yaml, default_model_kinds_generated.yaml), each stage starting from the last
one's best.pth, with the backbone swapped (a `...Kinds` model from stage 3 on) and, for `:lomo` runs, FaceSwap left
out of every stage (the leave-one-method-out twin). Stage 3 never sees StyleGAN3, so its best.pth is the run's
left-out-generator twin. The stages run without MLRun tracking (`python -m aletheia.training`): this is for a machine
that only trains; calibrate and report where MLRun is installed. On the CPU the recipe is the shell script.

Data loading (decoding, quality equalisation, self-blends with the face mesh) is what bounds a GPU run: give every
run `--workers` loader processes, and all runs together about the machine's cores. At the deadline every stage still
running is stopped; what finished is kept (a stage keeps its best epoch so far).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    ("base", "configs/default_model_base.yaml"),
    ("finetune", "configs/default_model.yaml"),
    ("kinds", "configs/default_model_kinds.yaml"),
    ("generated", "configs/default_model_kinds_generated.yaml"),
)
FACESWAP = "FF++ FaceSwap, Haar face crop 299px"


def stage_config(
    stage_file: str, backbone: str, lomo: bool, data: str, output: Path, init: Path | None, args
) -> dict:
    config = yaml.safe_load((ROOT / stage_file).read_text())
    kinds = config["model"].endswith("Kinds")
    config["model"] = backbone + ("Kinds" if kinds and not backbone.endswith("Kinds") else "")
    config.update(data=[data], output=str(output), device=args.device, num_workers=args.workers, threads=2)
    if init is not None:
        config["init_checkpoint"] = str(init)
    if args.smoke:  # two steps an epoch, one epoch a stage: checks a machine end to end in a minute
        config.update(epochs=1, steps_per_epoch=2, max_val_samples=64)
    if lomo:
        config["exclude_methods"] = sorted({*config.get("exclude_methods", []), FACESWAP})
    return config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="prepared face folder (aletheia prepare)")
    parser.add_argument("--work", required=True, type=Path, help="folder of the runs")
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        help="NAME=BACKBONE[:lomo], e.g. lite2=EfficientNetAutoAttLite2",
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=4, help="data-loader processes per run")
    parser.add_argument("--deadline-minutes", type=float, default=600.0)
    parser.add_argument(
        "--until",
        choices=[stage for stage, _ in STAGES],
        default=STAGES[-1][0],
        help="the last stage to run (e.g. kinds, when stage 4 is another recipe's: scripts/train_default_model.sh)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one epoch of two steps a stage, to check a machine"
    )
    args = parser.parse_args()
    last = [stage for stage, _ in STAGES].index(args.until)

    deadline = time.monotonic() + 60 * args.deadline_minutes
    runs = {}
    for spec in args.run:
        name, _, rest = spec.partition("=")
        backbone, _, flag = rest.partition(":")
        runs[name] = {"backbone": backbone, "lomo": flag == "lomo", "stage": 0, "process": None, "log": None}

    def start_next(name: str, run: dict) -> None:
        if run["stage"] > last:
            return
        stage, stage_file = STAGES[run["stage"]]
        output = args.work / name / stage
        init = args.work / name / STAGES[run["stage"] - 1][0] / "best.pth" if run["stage"] else None
        config = stage_config(stage_file, run["backbone"], run["lomo"], args.data, output, init, args)
        output.mkdir(parents=True, exist_ok=True)
        (output / "recipe-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        run["log"] = open(args.work / name / f"{stage}.log", "w")  # noqa: SIM115 - closed when the stage ends
        command = [sys.executable, "-m", "aletheia.training", "--config", str(output / "recipe-config.yaml")]
        run["process"] = subprocess.Popen(command, stdout=run["log"], stderr=subprocess.STDOUT, cwd=ROOT)
        print(f"{time.strftime('%H:%M:%S')} {name}: stage {stage} started", flush=True)

    for name, run in runs.items():
        start_next(name, run)
    while any(run["process"] is not None for run in runs.values()):
        time.sleep(2)
        for name, run in runs.items():
            process = run["process"]
            if process is None:
                continue
            if time.monotonic() > deadline:
                process.terminate()
                process.wait()
                print(f"{name}: stopped at the deadline in stage {STAGES[run['stage']][0]}", flush=True)
                run["process"] = None
                continue
            if process.poll() is None:
                continue
            run["log"].close()
            stage = STAGES[run["stage"]][0]
            print(
                f"{time.strftime('%H:%M:%S')} {name}: stage {stage} ended (exit {process.returncode})",
                flush=True,
            )
            run["process"] = None
            if process.returncode == 0:
                run["stage"] += 1
                start_next(name, run)


if __name__ == "__main__":
    main()
