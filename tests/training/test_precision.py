"""Training precision: bf16 only where the hardware has it, unless asked for (then with a warning)."""

import warnings

import pytest
import torch

from aletheia.training.loop import native_bf16, use_bf16_autocast

CPU = torch.device("cpu")


def test_fp32_never_autocasts() -> None:
    assert use_bf16_autocast("fp32", CPU) is False


def test_auto_follows_the_hardware() -> None:
    assert use_bf16_autocast("auto", CPU) is native_bf16(CPU)


def test_forced_bf16_is_honoured_and_warns_only_when_emulated() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert use_bf16_autocast("bf16", CPU) is True
    emulated = [w for w in caught if "emulated" in str(w.message)]
    assert bool(emulated) is (not native_bf16(CPU))


def test_a_cpu_without_bf16_units_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert native_bf16(CPU) is False and use_bf16_autocast("auto", CPU) is False
