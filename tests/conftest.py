"""Shared fixtures. Tests that need ../shared/data use the `shared_data` fixture and skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ALETHEIA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _private_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see (or fill) the user's real weights cache."""
    os.environ["ALETHEIA_CACHE"] = str(tmp_path_factory.mktemp("weights-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the development data; skips the test when it is absent (it may not be redistributed)."""
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def b4_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in ISPL's trainer format, under ISPL's file name, so the architecture must be read from keys."""
    import torch

    from aletheia.models.efficientnet import EfficientNetAutoAttB4

    torch.manual_seed(0)
    model = EfficientNetAutoAttB4()
    path = tmp_path_factory.mktemp("weights") / "EfficientNetAutoAttB4_DFDC_bestval.pth"
    torch.save({"net": model.state_dict(), "epoch": 3}, path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Two cores are shared by pytest and torch: one intra-op thread each keeps the suite fast and steady."""
    import torch

    torch.set_num_threads(1)
