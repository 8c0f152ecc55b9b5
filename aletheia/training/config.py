"""One validated config per training run, loadable from YAML and overridable from flags, saved with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class TrainConfig(BaseModel):
    """Everything that decides a training run. Unknown keys are errors, so a typo cannot silently do nothing."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: list[str] = Field(description="prepared face folders (output of `aletheia prepare`)")
    output: str = Field(description="run folder: checkpoints, history, config")
    model: str = "EfficientNetAutoAttLite0"
    init_checkpoint: str | None = Field(
        None, description="start from these weights (e.g. an ISPL checkpoint)"
    )
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    augment_strength: float = Field(1.0, ge=0, le=1)
    equalise_quality: bool = Field(
        False,
        description="re-encode (JPEG 60-95) and resample every training crop, so file quality and resolution "
        "cannot tell the classes apart",
    )
    crop_jitter: float = Field(
        0.0,
        ge=0,
        le=0.2,
        description="shift and scale half the training crops by up to this fraction of the crop (and turn them by up "
        "to 150x it in degrees), as detector boxes vary, so a score does not hang on the exact framing",
    )
    retouch: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training faces, real and fake alike, given a beauty filter on the face (skin "
        "smoothing under a soft face mask), so a smooth face is no sign of blending",
    )
    reframe: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training faces, real and fake alike, zoomed in or out so the face fills 60-95% of the "
        "crop's width: sources differ in framing (FF++ and UTKFace tight, the rest loose), classes must not",
    )
    self_blend: float = Field(
        0.0, ge=0, le=1, description="fraction of fake draws replaced by self-blended pseudo-fakes"
    )
    blend_mask: Literal["ellipse", "landmarks"] = Field(
        "ellipse",
        description="mask of self-blended pseudo-fakes: an ellipse fitted to the face box, or SBI's hull of the "
        "468-point face mesh (MediaPipe's landmark model, bundled)",
    )
    pseudo_generate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of fake draws replaced by pseudo-generated faces: real faces given a generator's "
        "upsampling traces (needs balance: source)",
    )
    pseudo_decoders: str | None = Field(
        None,
        description="weights of decoders trained on real faces (scripts/train_face_decoder.py): pseudo-generated "
        "faces rebuilt by them instead of through random upsampling kernels",
    )
    pair_sources: dict[str, str] = Field(
        default_factory=dict,
        description="balance a source as part of another (e.g. a generator's fakes with the real faces it was "
        "trained on), so a source without real faces of its own can be trained on without teaching its dataset",
    )
    source_shares: dict[str, float] = Field(
        default_factory=dict,
        description="under balance: source, a named source's share of draws against the others' 1 (after "
        "pair_sources), e.g. 2 for a dataset whose own fakes should be seen twice as often",
    )
    balance: Literal["sampler", "method", "source", "none"] = Field(
        "sampler",
        description="sampler: half real, half fake; method: also every real source and fake method an equal share; "
        "source: every dataset an equal share, each itself half real, half fake (pseudo-fakes where it has none)",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1)
    exclude_methods: list[str] = Field(
        default_factory=list, description="methods left out of training entirely"
    )
    exclude_sources: list[str] = Field(
        default_factory=list, description="sources left out of training and validation"
    )
    kinds: list[Literal["image", "video"]] = Field(
        ["image", "video"], description="use faces from these inputs"
    )
    early_stopping: int = Field(
        5, ge=1, description="epochs without validation-loss improvement before stopping"
    )
    lr_schedule: Literal["plateau", "cosine"] = Field(
        "plateau",
        description="plateau: cut the rate when the validation loss stalls; cosine: anneal it to zero over `epochs` "
        "(steadier when the validation loss is noisy)",
    )
    plateau_patience: int = Field(2, ge=0)
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32",
        description="bf16: autocast the training forward pass to bfloat16 (about 1.5x faster on CPUs with "
        "AVX512-BF16 or AMX, about 10x slower on CPUs without, where it is emulated); auto: bf16 only where the "
        "hardware has it; validation always runs in fp32",
    )
    steps_per_epoch: int | None = Field(None, ge=1, description="cap on training steps per epoch")
    max_val_samples: int | None = Field(None, ge=1)
    num_workers: int = Field(1, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads (default: what torch picks)")
    seed: int = 0
    resume: bool = True
    device: str = "cpu"

    @field_validator("data")
    @classmethod
    def _some_data(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one prepared data folder")
        return value

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: object) -> TrainConfig:
        values = yaml.safe_load(Path(path).read_text()) or {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))

    def tag(self) -> str:
        """A short run tag naming the hyper-parameters that matter (as ISPL's run tags)."""
        return f"{self.model}_lr{self.lr:g}_bs{self.batch_size}_aug{self.augment_strength:g}_seed{self.seed}"
