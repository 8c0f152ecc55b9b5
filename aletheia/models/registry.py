"""Model registry: one name -> a builder and the config every consumer needs to feed it (input size, normalisation,
decision threshold). The pipeline, training and serving all read the config from here so a face is normalised the
same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import efficientnet as effnet

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "ModelConfig",
    "UnknownModelError",
    "create_model",
    "get_config",
    "list_models",
    "register_model",
]

# Means/stds are in 0..1 pixel units: normalised = (pixel / 255 - mean) / std.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128 with x in 0..255, i.e. mean 127/255 and std 128/255.
LITE_MEAN: tuple[float, float, float] = (127 / 255,) * 3
LITE_STD: tuple[float, float, float] = (128 / 255,) * 3


@dataclass(frozen=True)
class ModelConfig:
    """What a caller must know to use a model: square input size, normalisation, default decision threshold."""

    name: str
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5
    temperature: float = 1.0  # logits are divided by this before the sigmoid (calibration)
    crop_margin: float = 0.2  # face-box margin that frames faces as in the model's training crops
    has_attention: bool = False
    kinds: tuple[str, ...] = ()  # models scoring each kind of fake: logits [N, 1 + K] (see efficientnet.py)
    description: str = ""
    # Set from a calibrated checkpoint (`aletheia calibrate`): the inconclusive band around the threshold chosen on
    # validation (None: results.DEFAULT_BAND_LOGIT), the largest spread across augmented views that still allows a
    # call, and the test-time augmentation these were fitted with.
    band: tuple[float, float] | None = None
    max_spread: float | None = None
    calibrated_tta: str | None = None
    weights_sha256: str | None = None  # of the checkpoint file the weights were read from
    weights_path: str | None = None  # that file (its MODEL_CARD.md, if any, sits beside it)


ModelBuilder = Callable[..., nn.Module]


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


_REGISTRY: dict[str, tuple[ModelBuilder, ModelConfig]] = {}


def register_model(config: ModelConfig) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(**kwargs) -> nn.Module`` under ``config.name``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if config.name in _REGISTRY:
            raise ValueError(f"model {config.name!r} is already registered")
        _REGISTRY[config.name] = (builder, config)
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[ModelBuilder, ModelConfig]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    # Forgive case ("efficientnetautoattb4"), but never guess beyond that.
    matches = [key for key in _REGISTRY if key.lower() == name.lower()]
    if len(matches) == 1:
        return _REGISTRY[matches[0]]
    raise UnknownModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")


def get_config(name: str) -> ModelConfig:
    return _lookup(name)[1]


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model (in train mode, like any fresh nn.Module). ``kwargs`` go to its builder,
    e.g. ``pretrained=False`` for the Lite models or ``width=1`` for the attention ones.
    The model's ``ModelConfig`` is attached as ``model.config``."""
    builder, config = _lookup(name)
    model = builder(**kwargs)
    model.config = config
    return model


register_model(
    ModelConfig(
        "EfficientNetB4", description="ISPL ICPR 2020 EfficientNet-B4 (random init; load trained weights)"
    )
)(effnet.EfficientNetB4)
register_model(
    ModelConfig(
        "EfficientNetAutoAttB4",
        has_attention=True,
        description="ISPL ICPR 2020 EfficientNet-B4 with attention after block 9 (random init; load trained weights)",
    )
)(effnet.EfficientNetAutoAttB4)
register_model(
    ModelConfig("EfficientNetB4ST", description="ISPL ICPR 2020 EfficientNet-B4, siamese-tuned head")
)(effnet.EfficientNetB4ST)
register_model(
    ModelConfig(
        "EfficientNetAutoAttB4ST",
        has_attention=True,
        description="ISPL ICPR 2020 EfficientNet-B4 with attention, siamese-tuned head",
    )
)(effnet.EfficientNetAutoAttB4ST)
register_model(
    ModelConfig(
        "EfficientNetLite0",
        mean=LITE_MEAN,
        std=LITE_STD,
        description="EfficientNet-Lite0, ImageNet-initialised, for CPU fine-tuning",
    )
)(effnet.EfficientNetLite0)
register_model(
    ModelConfig(
        "EfficientNetAutoAttLite0",
        mean=LITE_MEAN,
        std=LITE_STD,
        has_attention=True,
        description="EfficientNet-Lite0 with attention after block 4, ImageNet-initialised, for CPU fine-tuning",
    )
)(effnet.EfficientNetAutoAttLite0)
register_model(
    ModelConfig(
        "EfficientNetAutoAttLite0Kinds",
        mean=LITE_MEAN,
        std=LITE_STD,
        has_attention=True,
        kinds=effnet.FAKE_KINDS,
        description="EfficientNet-Lite0 with attention and a score per kind of fake (manipulated, generated)",
    )
)(effnet.EfficientNetAutoAttLite0Kinds)
