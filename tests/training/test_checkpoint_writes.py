"""Checkpoints and history are replaced whole: training killed at any moment of a write resumes, losing no epoch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aletheia.cli import main
from aletheia.training.loop import save_checkpoint

from .test_training import _train_args, prepared, tiny_dataset, workspace  # noqa: F401 (fixtures)

WRITER = """
import sys, torch
from pathlib import Path
from aletheia.training.loop import save_checkpoint
path, weights = Path(sys.argv[1]), torch.zeros(6_000_000)  # 24 MB a write
for number in range(10**6):
    save_checkpoint({"number": number, "weights": weights}, path)
    print(number, flush=True)
"""


def test_a_kill_at_any_moment_of_a_write_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pth"
    save_checkpoint({"number": -1, "weights": torch.zeros(1)}, path)
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None and writer.stdout.readline()  # at least one write done
        time.sleep(rng.uniform(0.0, 0.3))  # then killed somewhere inside another one
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["number"] >= 0 and state["weights"].numel() == 6_000_000


def test_resume_after_a_kill_between_the_history_and_the_checkpoint(
    prepared: Path,  # noqa: F811
    workspace: Path,  # noqa: F811
) -> None:
    assert main(["train", *_train_args(prepared, workspace, "killed", "--epochs", "1")]) == 0
    run = workspace / "killed"
    first = json.loads((run / "history.json").read_text())
    # As a kill during epoch 1's writes leaves it: its history written, last.pth half-way through its .tmp.
    (run / "history.json").write_text(json.dumps([*first, {**first[0], "epoch": 1, "val_loss": -1.0}]))
    (run / "last.pth.tmp").write_bytes((run / "last.pth").read_bytes()[:1000])
    assert main(["train", *_train_args(prepared, workspace, "killed", "--epochs", "2")]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and history[0] == first[0] and history[1]["val_loss"] >= 0
    assert (
        torch.load(run / "last.pth", weights_only=True)["epoch"] == 1 and not (run / "last.pth.tmp").exists()
    )
