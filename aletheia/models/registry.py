"""Model registry: one name -> a builder and the config every consumer needs to feed it (input size, normalisation,
decision threshold). The pipeline, training and serving all read the config from here so a face is normalised the
same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import efficientnet as effnet
from .config import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, ModelConfig

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
register_model(
    ModelConfig(
        "EfficientNetAutoAttLite2",
        mean=LITE_MEAN,
        std=LITE_STD,
        has_attention=True,
        description="EfficientNet-Lite2 with attention after block 6, ImageNet-initialised (a Lite2 recipe's first stages)",
    )
)(effnet.EfficientNetAutoAttLite2)
register_model(
    ModelConfig(
        "EfficientNetAutoAttLite2Kinds",
        mean=LITE_MEAN,
        std=LITE_STD,
        has_attention=True,
        kinds=effnet.FAKE_KINDS,
        description="EfficientNet-Lite2 (stronger ImageNet backbone) with attention and a score per kind of fake",
    )
)(effnet.EfficientNetAutoAttLite2Kinds)
