"""Hostile checkpoints: settings that would silently corrupt every score are refused, and a checkpoint refused for
holding code is not met with PyTorch's advice to load it with weights_only=False."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from aletheia.models.checkpoints import CheckpointError, read_checkpoint


def _saved(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "model.pth"
    torch.save({"net": {"w": torch.zeros(2)}, **extra}, path)
    return path


@pytest.mark.parametrize(
    "key, value",
    [
        ("temperature", -1.0),
        ("temperature", 0.0),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "hot"),
        ("threshold", 0.0),
        ("threshold", 1.0),
        ("threshold", 1.5),
        ("threshold", True),
        ("crop_margin", math.nan),
    ],
)
def test_settings_that_would_corrupt_every_score_are_refused(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(CheckpointError, match=f"its {key} must be"):
        read_checkpoint(_saved(tmp_path, **{key: value}))


def test_sound_settings_are_kept(tmp_path: Path) -> None:
    settings = {"temperature": torch.tensor(1.7), "threshold": 0.42, "crop_margin": 0.03}
    _, metadata = read_checkpoint(_saved(tmp_path, **settings))
    assert float(metadata["temperature"]) == pytest.approx(1.7) and metadata["threshold"] == 0.42


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo this should never run",))


@pytest.mark.parametrize("payload", [_RunsCode(), np.float64(1.0)], ids=["os.system", "numpy scalar"])
def test_a_checkpoint_that_holds_code_is_refused_without_advice_to_run_it(
    tmp_path: Path, payload: object
) -> None:
    path = _saved(tmp_path, extra=payload)
    with pytest.raises(CheckpointError) as refused:
        read_checkpoint(path)
    message = str(refused.value)
    assert "refused, because loading it could run code" in message
    assert "weights_only" not in message and "trust" not in message
