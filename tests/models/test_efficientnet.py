"""EfficientNet classifiers and the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aletheia.models import efficientnet as effnet
from aletheia.models import registry
from aletheia.models.registry import (
    IMAGENET_MEAN,
    LITE_MEAN,
    LITE_STD,
    ModelConfig,
    UnknownModelError,
    create_model,
    get_config,
    list_models,
    register_model,
)

# Published ISPL EfficientNetAutoAttB4 checkpoint: 708 tensors, 17,550,466 parameters.
AUTOATT_B4_KEYS, AUTOATT_B4_PARAMS = 708, 17_550_466
EXPECTED_KEYS = {
    "EfficientNetB4": 706,
    "EfficientNetAutoAttB4": 708,
    "EfficientNetB4ST": 713,
    "EfficientNetAutoAttB4ST": 715,
    "EfficientNetLite0": 296,
    "EfficientNetAutoAttLite0": 298,
    "EfficientNetAutoAttLite0Kinds": 298,  # the same keys; its head has one row per kind of fake
    "EfficientNetAutoAttLite2": 388,  # Lite2: 21 blocks against Lite0's 16
    "EfficientNetAutoAttLite2Kinds": 388,
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Every registered model, built once for the module, in eval mode, with fixed random weights."""
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in list_models()}


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_autoatt_b4_matches_published_state_dict(models: dict[str, nn.Module]) -> None:
    state = models["EfficientNetAutoAttB4"].state_dict()
    assert len(state) == AUTOATT_B4_KEYS
    assert n_params(models["EfficientNetAutoAttB4"]) == AUTOATT_B4_PARAMS
    assert state["efficientnet.attconv.weight"].shape == (1, 56, 1, 1)
    assert state["efficientnet.attconv.bias"].shape == (1,)
    assert state["classifier.weight"].shape == (1, 1792)
    assert state["classifier.bias"].shape == (1,)
    assert "efficientnet._blocks.9._project_conv.weight" in state
    assert "efficientnet._blocks.31._bn2.running_var" in state
    assert not any(k.startswith("efficientnet._fc") for k in state)
    assert all(k.startswith(("efficientnet.", "classifier.")) for k in state)


def test_b4_is_autoatt_b4_without_attention(models: dict[str, nn.Module]) -> None:
    plain, att = models["EfficientNetB4"].state_dict(), models["EfficientNetAutoAttB4"].state_dict()
    assert set(att) - set(plain) == {"efficientnet.attconv.weight", "efficientnet.attconv.bias"}
    assert n_params(models["EfficientNetB4"]) == AUTOATT_B4_PARAMS - 57


def test_siamese_tuned_layout(models: dict[str, nn.Module]) -> None:
    state = models["EfficientNetAutoAttB4ST"].state_dict()
    assert state["feat_ext.efficientnet.attconv.weight"].shape == (1, 56, 1, 1)
    assert state["classifier.0.running_mean"].shape == (1792,)
    assert state["classifier.1.weight"].shape == (1, 1792)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model(name: str, models: dict[str, nn.Module], batch: torch.Tensor) -> None:
    model, config = models[name], get_config(name)
    assert model.config == config and config.name == name
    assert len(model.state_dict()) == EXPECTED_KEYS[name]
    with torch.no_grad():  # one full pass per model (B4 is slow on a busy 2-core CPU)
        features = model.forward_features(batch)
        logits = model.forward_head(features)
        pooled = model.forward_head(features, pre_logits=True)
    assert logits.shape == (2, 1 + len(config.kinds)) and torch.isfinite(logits).all()
    assert features.shape[:2] == (2, model.num_features) and features.shape[2:] == (7, 7)
    assert pooled.shape == (2, model.num_features)
    assert model.has_attention == config.has_attention
    if config.has_attention:
        with torch.no_grad():
            attention = model.get_attention(batch)
            logits_again, attention_again = model.forward_with_attention(batch)
        assert attention.shape == (2, 1, 28, 28)
        assert ((attention >= 0) & (attention <= 1)).all()
        torch.testing.assert_close(attention_again, attention)
        torch.testing.assert_close(logits_again, logits)
    else:
        with pytest.raises(AttributeError, match="no attention"):
            model.get_attention(batch)


def test_b4_matches_efficientnet_pytorch_forward(models: dict[str, nn.Module], batch: torch.Tensor) -> None:
    """Our block loop must compute what the library's own extract_features computes (ISPL's EfficientNetB4)."""
    model = models["EfficientNetB4"]
    net = model.efficientnet
    x = batch[:1]
    with torch.no_grad():
        reference = model.classifier(net._avg_pooling(net.extract_features(x)).flatten(1))
        torch.testing.assert_close(model(x), reference)


def test_saturated_attention_is_identity(batch: torch.Tensor) -> None:
    """With the gate forced to ~1 the attention model computes exactly the plain model."""
    torch.manual_seed(0)
    att = effnet.EfficientNetAutoAttLite0(pretrained=False).eval()
    plain = effnet.EfficientNetLite0(pretrained=False).eval()
    plain.load_state_dict({k: v for k, v in att.state_dict().items() if "attconv" not in k})
    with torch.no_grad():
        att.efficientnet.attconv.weight.zero_()
        att.efficientnet.attconv.bias.fill_(50.0)
        torch.testing.assert_close(att(batch), plain(batch))


def test_attention_width_adds_3x3_layers() -> None:
    model = effnet.EfficientNetAutoAttLite0(pretrained=False, width=2)
    keys = [k for k in model.state_dict() if "attconv" in k]
    assert keys == [
        f"efficientnet.attconv.{layer}.{p}"
        for layer in ("conv0", "conv1", "conv_out")
        for p in ("weight", "bias")
    ]
    assert model.efficientnet.attconv.conv0.weight.shape == (40, 40, 3, 3)
    with torch.no_grad():
        assert model.get_attention(torch.zeros(1, 3, 224, 224)).shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="width"):
        effnet.EfficientNetAutoAttLite0(pretrained=False, width=-1)


def test_lite0_starts_from_bundled_imagenet_weights(models: dict[str, nn.Module]) -> None:
    imagenet = torch.load(effnet.lite0_imagenet_weights_path(), map_location="cpu", weights_only=True)
    for name in ("EfficientNetLite0", "EfficientNetAutoAttLite0"):
        state = models[name].state_dict()
        torch.testing.assert_close(state["efficientnet._conv_stem.weight"], imagenet["_conv_stem.weight"])
        torch.testing.assert_close(
            state["efficientnet._blocks.15._project_conv.weight"], imagenet["_blocks.15._project_conv.weight"]
        )
    assert models["EfficientNetAutoAttLite0"].efficientnet.attconv.weight.shape == (1, 40, 1, 1)


def test_set_swish_keeps_lite_relu6_and_b4_output() -> None:
    lite = effnet.EfficientNetLite0(pretrained=False)
    lite.set_swish(memory_efficient=False)
    assert isinstance(lite.efficientnet._swish, nn.ReLU6)
    assert isinstance(lite.efficientnet._blocks[3]._swish, nn.ReLU6)

    torch.manual_seed(0)
    b4 = effnet.EfficientNetAutoAttB4().eval()
    x = torch.randn(1, 3, 96, 96)  # the swap is elementwise: any size shows it
    with torch.no_grad():
        before = b4(x)
        b4.set_swish(memory_efficient=False)
        torch.testing.assert_close(b4(x), before)


def test_lite_normalisation_is_minus_127_over_128() -> None:
    config = get_config("EfficientNetLite0")
    pixel = torch.tensor([0.0, 127.0, 255.0])
    normalised = (pixel / 255 - config.mean[0]) / config.std[0]
    torch.testing.assert_close(normalised, (pixel - 127) / 128)
    assert (config.mean, config.std) == (LITE_MEAN, LITE_STD)
    assert get_config("EfficientNetAutoAttB4").mean == IMAGENET_MEAN


def test_config_defaults() -> None:
    config = get_config("EfficientNetAutoAttB4")
    assert (config.input_size, config.threshold, config.has_attention) == (224, 0.5, True)
    with pytest.raises(AttributeError):
        config.threshold = 0.3  # type: ignore[misc]


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("EfficientNetB7")
    message = str(info.value)
    assert "'EfficientNetB7'" in message
    assert all(name in message for name in list_models())


def test_lookup_forgives_case() -> None:
    assert get_config("efficientnetautoattb4").name == "EfficientNetAutoAttB4"


def test_register_model_decorator() -> None:
    @register_model(ModelConfig("TinyTestNet", input_size=32))
    def tiny(channels: int = 3) -> nn.Module:
        return nn.Conv2d(channels, 1, 1)

    try:
        assert "TinyTestNet" in list_models()
        model = create_model("TinyTestNet", channels=4)
        assert model.in_channels == 4 and model.config.input_size == 32
        with pytest.raises(ValueError, match="already registered"):
            register_model(ModelConfig("TinyTestNet"))(tiny)
    finally:
        del registry._REGISTRY["TinyTestNet"]
