"""What the pipeline asks for: a ready classifier from a model name and/or a checkpoint file, or a clear error.

Published weights are used from the cache only: fetching them is an explicit step (`aletheia weights download`),
so detection never reaches the network on its own.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aletheia.models.config import ModelConfig
from aletheia.models.inference import BUNDLED_MODEL as DEFAULT_MODEL
from aletheia.models.preprocessing import apply_stored
from aletheia.provenance import sha256_file

if TYPE_CHECKING:
    import torch
    from torch import nn

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def is_bundled_name(spec: str | Path | None) -> bool:
    """Whether `spec` names the bundled model as results print it ("aletheia-lite0", or its file name), and no file
    of that name exists here to mean something else."""
    if spec is None or str(spec) not in (DEFAULT_MODEL.stem, DEFAULT_MODEL.name):
        return False
    return not Path(spec).expanduser().is_file() and DEFAULT_MODEL.is_file()


def is_checkpoint_path(spec: str) -> bool:
    """A model argument is a file when it exists or looks like one; otherwise it is a name."""
    path = Path(spec).expanduser()
    return path.is_file() or path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in spec


def load_classifier(
    model_name: str | None,
    model_checkpoint: str | Path | None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, ModelConfig, str]:
    """(model in eval mode on `device`, its config, a label for results).

    `model_checkpoint` alone: the architecture is read from its keys. With `model_name` too, that architecture is
    used. A published-weights name alone: the cached download. A bare architecture name is refused: its weights
    would be random.
    """
    # Here, not at the top: `is_checkpoint_path` and DEFAULT_MODEL are wanted where torch is not.
    from aletheia.models.checkpoints import (
        PUBLISHED_WEIGHTS,
        CheckpointError,
        cached_weights_path,
        infer_architecture,
        load_state_dict_file,
        model_from_state_dict,
        read_checkpoint,
    )
    from aletheia.models.registry import get_config, list_models

    metadata: dict = {}
    if model_checkpoint is None and is_bundled_name(model_name):
        model_name = None  # the name printed in results, not an architecture
    bundled = model_checkpoint is None and model_name is None and DEFAULT_MODEL.is_file()
    if bundled or is_bundled_name(model_checkpoint):
        model_checkpoint = DEFAULT_MODEL
    if model_checkpoint is not None:
        path = Path(model_checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        state, metadata = read_checkpoint(path)
        name = (
            get_config(model_name).name
            if model_name
            else metadata.get("architecture") or infer_architecture(state)
        )
        model, label = model_from_state_dict(name, state, source=str(path)), path.name
        weights = path
    elif model_name in PUBLISHED_WEIGHTS:
        if not PUBLISHED_WEIGHTS[model_name].loadable:
            raise CheckpointError(
                f"{model_name}: the {PUBLISHED_WEIGHTS[model_name].architecture} architecture is not supported "
                "yet, so these weights cannot be used"
            )
        path = cached_weights_path(model_name)
        if not path.is_file():
            raise CheckpointError(
                f"{model_name} is not downloaded yet: run `aletheia weights download {model_name}` "
                f"(it verifies the file's SHA-256), or pass the .pth file itself"
            )
        name = PUBLISHED_WEIGHTS[model_name].architecture
        model, label = model_from_state_dict(name, load_state_dict_file(path), source=str(path)), model_name
        weights = path
    elif model_name is not None:
        raise CheckpointError(
            f"{get_config(model_name).name} is an architecture without trained weights: pass a checkpoint file "
            f"(model_checkpoint=... / --model FILE) or a published weights name ({', '.join(PUBLISHED_WEIGHTS)})"
        )
    else:
        raise CheckpointError(
            "no model given: pass a checkpoint file or a published weights name "
            f"({', '.join(PUBLISHED_WEIGHTS)}); registered architectures: {', '.join(list_models())}"
        )
    # A calibrated checkpoint carries its own decision threshold, temperature, crop margin and verdict band
    # (`aletheia calibrate`), a trained one its preprocessing: they win over the architecture's defaults. The file's
    # hash, taken once here, goes into every result's provenance.
    config = replace(apply_stored(get_config(name), metadata, label), weights_sha256=sha256_file(weights),
                     weights_path=str(weights))  # fmt: skip
    return model.to(device), config, label
