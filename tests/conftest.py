"""Shared fixtures. Tests that need ../shared/data use the `shared_data` fixture and skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ALETHEIA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the development data; skips the test when it is absent (it may not be redistributed)."""
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"development data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """Two cores are shared by pytest and torch: one intra-op thread each keeps the suite fast and steady."""
    import torch

    torch.set_num_threads(1)
