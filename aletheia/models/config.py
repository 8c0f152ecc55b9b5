"""What a caller must know to use a classifier, without torch: input size, normalisation, calibration, face crop.

The registry (aletheia.models.registry) gives each architecture its defaults; a checkpoint or an exported model
carries its own values (aletheia.models.preprocessing), which take precedence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aletheia.models.preprocessing import Preprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "ModelConfig"]

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
    face_policy: str = "scale"  # how faces were cut for training (aletheia.faces.extract.crop_face)
    # Set from a calibrated checkpoint (`aletheia calibrate`): the inconclusive band around the threshold chosen on
    # validation (None: results.DEFAULT_BAND_LOGIT), the largest spread across augmented views that still allows a
    # call, and the test-time augmentation these were fitted with.
    band: tuple[float, float] | None = None
    max_spread: float | None = None
    calibrated_tta: str | None = None
    weights_sha256: str | None = None  # of the checkpoint file the weights were read from
    weights_path: str | None = None  # that file (its MODEL_CARD.md, if any, sits beside it)

    @property
    def preprocessing(self) -> Preprocessing:
        """Face crop to normalised input for this model: the one function inference and training share."""
        from aletheia.models.preprocessing import Preprocessing

        return Preprocessing(self.face_policy, self.input_size, self.crop_margin, self.mean, self.std)
