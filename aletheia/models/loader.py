"""What the pipeline asks for: a ready torch classifier for a model spec (aletheia.models.spec), or a clear error.

Published weights are used from the cache only: fetching them is an explicit step (`aletheia weights download`),
so detection never reaches the network on its own.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aletheia.models.config import ModelConfig
from aletheia.models.preprocessing import apply_stored
from aletheia.models.spec import DEFAULT_MODEL, CheckpointError, ModelSpec, resolve_model_arguments
from aletheia.provenance import sha256_file

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DEFAULT_MODEL", "load_classifier"]


def load_classifier(
    model_name: str | os.PathLike[str] | ModelSpec | None,
    model_checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, ModelConfig, str]:
    """(model in eval mode on `device`, its config, a label for results).

    `model_name` is any model spec (or a resolved ModelSpec); with `model_checkpoint` it names that checkpoint's
    architecture instead (otherwise read from the checkpoint). A bare architecture name is refused: its weights
    would be random.
    """
    # Here, not at the top: the spec is resolved without torch.
    from aletheia.models.checkpoints import (
        PUBLISHED_WEIGHTS,
        infer_architecture,
        load_state_dict_file,
        model_from_state_dict,
        read_checkpoint,
    )
    from aletheia.models.registry import get_config

    spec = resolve_model_arguments(model_name, model_checkpoint)
    metadata: dict = {}
    weights = spec.checkpoint
    if spec.kind == "registered":
        raise CheckpointError(
            f"{spec.architecture} is an architecture without trained weights: pass a checkpoint file "
            f"(model_checkpoint=... / --model FILE) or a published weights name ({', '.join(PUBLISHED_WEIGHTS)})"
        )
    if spec.kind == "published":
        entry = PUBLISHED_WEIGHTS[spec.name]
        if not entry.loadable:
            raise CheckpointError(
                f"{spec.name}: the {entry.architecture} architecture is not supported yet, so these weights "
                "cannot be used"
            )
        if weights is None or not weights.is_file():
            raise CheckpointError(
                f"{spec.name} is not downloaded yet: run `aletheia weights download {spec.name}` "
                f"(it verifies the file's SHA-256), or pass the .pth file itself"
            )
        name, state = entry.architecture, load_state_dict_file(weights)
    elif weights is None:
        raise CheckpointError(
            f"{spec.onnx}: an exported model with no checkpoint it was made from beside it runs on the onnx or "
            "openvino backend on a CPU, not with torch; pass its .pth for that"
        )
    else:
        state, metadata = read_checkpoint(weights)
        name = (
            get_config(spec.architecture).name
            if spec.architecture
            else metadata.get("architecture") or infer_architecture(state)
        )
    model = model_from_state_dict(name, state, source=str(weights))
    # A calibrated checkpoint carries its own decision threshold, temperature, crop margin and verdict band
    # (`aletheia calibrate`), a trained one its preprocessing: they win over the architecture's defaults. The file's
    # hash, taken once here, goes into every result's provenance.
    config = replace(apply_stored(get_config(name), metadata, spec.name), weights_sha256=sha256_file(weights),
                     weights_path=str(weights))  # fmt: skip
    return model.to(device), config, spec.name
