"""ONNX Runtime / OpenVINO classifiers: parity with torch, dynamic batch, attention, export cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from aletheia.models import runtime
from aletheia.models.efficientnet import EfficientNetAutoAttB4, EfficientNetAutoAttLite0, EfficientNetLite0
from aletheia.models.registry import get_config
from aletheia.models.runtime import OnnxClassifier, compile_classifier, export_onnx

EXPORTED = ("onnx", "openvino")
# Measured max abs differences to torch are ~2e-6 (logits and attention, Lite0 and B4, both backends in f32);
# OpenVINO in bf16 is off by 5e-3..5e-2, so this tolerance also catches a lost f32 hint.
TOL = {"atol": 1e-4, "rtol": 1e-4}


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random-init weights with BatchNorm statistics from one random batch, in eval mode.

    Freshly initialised EfficientNets give (nearly) the same logit for every input, which would make parity
    trivial; normalised activations give input-dependent logits and attention maps spanning ~0.02..0.97.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lite_att() -> nn.Module:
    torch.manual_seed(0)
    return calibrated(EfficientNetAutoAttLite0(pretrained=False))


@pytest.fixture(scope="module")
def lite_att_compiled(lite_att: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    cache = tmp_path_factory.mktemp("onnx")
    config = get_config("EfficientNetAutoAttLite0")
    return {backend: compile_classifier(lite_att, config, backend, cache_dir=cache) for backend in EXPORTED}


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize("n", [1, 5])
def test_logits_and_attention_match_torch(
    lite_att: nn.Module, lite_att_compiled: dict[str, object], backend: str, n: int
) -> None:
    clf = lite_att_compiled[backend]
    x = batch(n)
    with torch.no_grad():
        want_logits, want_attention = lite_att.forward_with_attention(x)
    logits, attention = clf.forward_with_attention(x)
    assert logits.shape == (n, 1) and attention.shape == (n, 1, 28, 28)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, want_logits, **TOL)
    torch.testing.assert_close(attention, want_attention, **TOL)
    torch.testing.assert_close(clf(x), want_logits, **TOL)
    assert clf.has_attention and clf.config.name == "EfficientNetAutoAttLite0"


@pytest.mark.parametrize("backend", EXPORTED)
def test_numpy_input_and_inference_mode(lite_att_compiled: dict[str, object], backend: str) -> None:
    clf = lite_att_compiled[backend]
    x = batch(2)
    with torch.inference_mode():  # as the pipeline calls it
        from_tensor = clf(x)
    torch.testing.assert_close(clf(x.numpy()), from_tensor)


@pytest.mark.parametrize("backend", EXPORTED)
def test_wrong_input_shape_is_a_clear_error(lite_att_compiled: dict[str, object], backend: str) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        lite_att_compiled[backend](torch.zeros(1, 3, 160, 160))


@pytest.mark.parametrize("backend", EXPORTED)
def test_model_without_attention(tmp_path: Path, backend: str) -> None:
    torch.manual_seed(0)
    model = calibrated(EfficientNetLite0(pretrained=False))
    clf = compile_classifier(model, get_config("EfficientNetLite0"), backend, cache_dir=tmp_path)
    x = batch(3)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(clf(x), want, **TOL)
    assert not clf.has_attention
    with pytest.raises(AttributeError, match="without an attention output"):
        clf.forward_with_attention(x)


def test_export_is_cached_and_reused(
    lite_att: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[Path] = []

    def counting_export(*args: object, **kwargs: object) -> Path:
        path = export_onnx(*args, **kwargs)
        exports.append(path)
        return path

    monkeypatch.setattr(runtime, "export_onnx", counting_export)
    config = get_config("EfficientNetAutoAttLite0")
    first = compile_classifier(lite_att, config, "onnx", cache_dir=tmp_path)
    mtime = first.path.stat().st_mtime_ns
    second = compile_classifier(lite_att, config, "openvino", cache_dir=tmp_path)
    assert exports == [first.path] and second.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temporary files left behind

    changed = EfficientNetAutoAttLite0(pretrained=False)
    changed.load_state_dict(lite_att.state_dict())
    with torch.no_grad():
        changed.classifier.bias += 1.0
    third = compile_classifier(changed, config, "onnx", cache_dir=tmp_path)
    assert third.path != first.path and len(exports) == 2


def test_default_cache_dir_follows_aletheia_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALETHEIA_CACHE", str(tmp_path))
    assert runtime.default_onnx_cache_dir() == tmp_path / "onnx"
    monkeypatch.delenv("ALETHEIA_CACHE")
    assert runtime.default_onnx_cache_dir() == Path.home() / ".cache" / "aletheia" / "onnx"


def test_torch_backend_is_the_module_itself(lite_att: nn.Module) -> None:
    assert compile_classifier(lite_att, get_config("EfficientNetAutoAttLite0"), "torch") is lite_att


def test_unknown_backend_lists_choices(lite_att: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'.*torch, onnx, openvino"):
        compile_classifier(lite_att, get_config("EfficientNetAutoAttLite0"), "tensorrt")


def test_b4_autoatt_parity_and_model_untouched(tmp_path: Path) -> None:
    """The published architecture: swish (exported as plain swish), static same-padding, attention after block 9."""
    torch.manual_seed(0)
    model = calibrated(EfficientNetAutoAttB4())
    swish = type(model.efficientnet._swish)
    path = export_onnx(model, tmp_path / "b4.onnx", 224, with_attention=True)
    assert type(model.efficientnet._swish) is swish  # the caller's memory-efficient swish is kept
    config = get_config("EfficientNetAutoAttB4")
    x = batch(2)
    with torch.no_grad():
        want_logits, want_attention = model.forward_with_attention(x)
    for clf in (OnnxClassifier(path, config), runtime.OpenVinoClassifier(path, config)):
        logits, attention = clf.forward_with_attention(x)
        torch.testing.assert_close(logits, want_logits, **TOL)
        torch.testing.assert_close(attention, want_attention, **TOL)
        assert np.ptp(attention.numpy()) > 0.5  # a real map, not a constant
