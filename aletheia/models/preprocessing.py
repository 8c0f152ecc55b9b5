"""Face crop to normalised classifier input: one owner for inference (the pipeline) and training.

`Preprocessing` holds the settings a model was trained with (face policy, input size, crop margin, normalisation).
They are stored with the weights (a checkpoint's "preprocessing" entry, an exported model's metadata), read back by
`apply_stored`, and a caller asking for something else is told (`check_face_policy`). Needs no torch.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from aletheia.faces.extract import FACE_POLICIES, crop_face
from aletheia.models.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig

__all__ = [
    "Preprocessing",
    "PreprocessingError",
    "apply_stored",
    "check_face_policy",
    "normalise",
    "training_preprocessing",
]


class PreprocessingError(ValueError):
    """Stored preprocessing settings that cannot be right (unknown policy, non-positive std, ...)."""


@dataclass(frozen=True)
class Preprocessing:
    face_policy: str = "scale"
    input_size: int = 224
    margin: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def crop(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """One face (box in image pixels) as the model's uint8 RGB input_size x input_size crop."""
        return crop_face(image, box, self.face_policy, self.input_size, self.margin)  # type: ignore[arg-type]

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (n, size, size, 3) -> the model's float32 input (n, 3, size, size)."""
        return normalise(crops, self.mean, self.std)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "stored settings") -> Preprocessing:
        """Settings as stored with weights; unknown keys are ignored, missing ones keep the defaults."""
        values = {k: data[k] for k in ("face_policy", "input_size", "margin", "mean", "std") if k in data}
        try:
            for key in ("mean", "std"):
                if key in values:
                    values[key] = tuple(float(v) for v in values[key])
                    if len(values[key]) != 3:
                        raise ValueError(f"{key} needs 3 values")
            if "input_size" in values:
                values["input_size"] = int(values["input_size"])
            if "margin" in values:
                values["margin"] = float(values["margin"])
        except (TypeError, ValueError) as exc:
            raise PreprocessingError(f"{source}: unusable preprocessing {data!r} ({exc})") from exc
        settings = cls(**values)
        settings.validate(source)
        return settings

    def validate(self, source: str = "preprocessing") -> None:
        problems = []
        if self.face_policy not in FACE_POLICIES:
            problems.append(f"face_policy {self.face_policy!r} is not one of {FACE_POLICIES}")
        if not 16 <= self.input_size <= 4096:
            problems.append(f"input_size {self.input_size} is not between 16 and 4096")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 2):
            problems.append(f"margin {self.margin} is not between 0 and 2")
        if not all(math.isfinite(s) and s > 0 for s in self.std) or not all(map(math.isfinite, self.mean)):
            problems.append(f"mean {self.mean} / std {self.std} are not finite with std above 0")
        if problems:
            raise PreprocessingError(f"{source}: {'; '.join(problems)}")


def normalise(crops: np.ndarray, mean, std) -> np.ndarray:
    """uint8 NHWC RGB crops -> float32 NCHW, (pixel / 255 - mean) / std: the same float32 arithmetic as torch's.

    A uint8 has 256 values: each channel's are computed once, in that arithmetic, and looked up (a third of the
    time of computing every pixel, the same bits)."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8:
        x = np.ascontiguousarray(crops).astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - mean) / std)
    table = _table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    out = np.empty((crops.shape[0], crops.shape[3], *crops.shape[1:3]), dtype=np.float32)
    for channel in range(crops.shape[3]):
        out[:, channel] = table[channel][crops[..., channel]]
    return out


@lru_cache(maxsize=8)
def _table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(channels, 256) float32: (value / 255 - mean) / std for every uint8 value, in float32 as torch computes it."""
    values = np.arange(256, dtype=np.float32) / np.float32(255.0)
    table = (values[None] - np.asarray(mean, dtype=np.float32)[:, None]) / np.asarray(std, dtype=np.float32)[
        :, None
    ]
    table.setflags(write=False)
    return table


def apply_stored(config: ModelConfig, metadata: dict[str, Any], source: str) -> ModelConfig:
    """`config` (the architecture's defaults) with what the weights carry: calibration (threshold, temperature,
    crop_margin) and their preprocessing, which wins over the defaults. Kinds stored with the weights must be the
    architecture's."""
    changes: dict[str, Any] = {}
    for key in ("threshold", "temperature", "crop_margin"):
        if key in metadata:
            changes[key] = float(metadata[key])
    # The verdict band, spread limit and test-time augmentation they were fitted with (`aletheia calibrate`).
    if metadata.get("band") is not None:
        changes["band"] = tuple(float(v) for v in metadata["band"])
    if metadata.get("max_spread") is not None:
        changes["max_spread"] = float(metadata["max_spread"])
    if metadata.get("tta") is not None:
        changes["calibrated_tta"] = str(metadata["tta"])
    stored = metadata.get("preprocessing")
    if isinstance(stored, dict):
        settings = Preprocessing.from_json(stored, source)
        changes.update(face_policy=settings.face_policy, input_size=settings.input_size, mean=settings.mean,
                       std=settings.std)  # fmt: skip
        # The calibrated margin ("crop_margin") is the one to use; the training margin only when there is none.
        changes.setdefault("crop_margin", settings.margin)
    if "kinds" in metadata and tuple(metadata["kinds"]) != tuple(config.kinds):
        raise PreprocessingError(
            f"{source}: its kinds {tuple(metadata['kinds'])} are not {config.name}'s {tuple(config.kinds)}"
        )
    return replace(config, **changes)


def check_face_policy(config: ModelConfig, face_policy: str | None) -> str:
    """The face policy to crop with: the model's own unless the caller asks for another, which is allowed (an
    experiment) but said, since the model never saw faces cut that way."""
    if face_policy is None or face_policy == config.face_policy:
        return config.face_policy
    if face_policy not in FACE_POLICIES:
        raise ValueError(f"unknown face policy {face_policy!r}; choose one of {FACE_POLICIES}")
    warnings.warn(
        f"{config.name} was trained on faces cut with face_policy={config.face_policy!r}; cropping with "
        f"{face_policy!r} gives it inputs it never saw, and scores may shift",
        UserWarning,
        stacklevel=3,
    )
    return face_policy


def training_preprocessing(config: ModelConfig, face_policies, crop_sizes) -> Preprocessing:
    """The preprocessing a model is trained with, to store in its checkpoints: the model's normalisation and input
    size, the face policy its training crops were cut with (when they agree on one). Crops cut at another size than
    the model's input are resized on the way in, a difference worth a warning."""
    policies, sizes = set(map(str, face_policies)), set(map(int, crop_sizes))
    policy = policies.pop() if len(policies) == 1 else config.face_policy
    if sizes - {config.input_size}:
        warnings.warn(
            f"training crops were cut at {sorted(sizes)} px, {config.name} takes {config.input_size} px",
            UserWarning,
            stacklevel=2,
        )
    return replace(config, face_policy=policy).preprocessing
