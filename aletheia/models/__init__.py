"""Stage 2: authenticity classifiers. Knows nothing of face detection.

Names load lazily: `aletheia.models.config`, `.preprocessing`, `.spec` and `.inference` (what detection on a CPU
needs) import no torch, and importing one of them must not drag in the torch modules below (checkpoints,
architectures, registry).
"""

from __future__ import annotations

import importlib

_SOURCES = {
    "spec": ("CheckpointError", "ModelSpec", "UnknownModelSpecError", "resolve_model_spec"),
    "checkpoints": (
        "UnsupportedArchitectureError",
        "infer_architecture",
        "load_checkpoint",
        "load_model",
        "load_state_dict_file",
        "model_from_state_dict",
        "resolve_model",
    ),
    "published": (
        "PUBLISHED_WEIGHTS",
        "ChecksumError",
        "PublishedWeights",
        "WeightsDownloadError",
        "cached_weights_path",
        "download_weights",
    ),
    "efficientnet": (
        "EfficientNetAutoAttB4",
        "EfficientNetAutoAttB4ST",
        "EfficientNetAutoAttLite0",
        "EfficientNetAutoAttLite0Kinds",
        "EfficientNetAutoAttLite2",
        "EfficientNetAutoAttLite2Kinds",
        "EfficientNetB4",
        "EfficientNetB4ST",
        "EfficientNetClassifier",
        "EfficientNetLite0",
        "SiameseTunedClassifier",
    ),
    "config": ("ModelConfig",),
    "registry": ("UnknownModelError", "create_model", "get_config", "list_models", "register_model"),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
