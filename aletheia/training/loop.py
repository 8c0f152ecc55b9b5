"""The training loop: Adam + BCE-with-logits, reduce-on-plateau or cosine schedule, early stopping and best
checkpoint on a group-balanced validation loss, best/last checkpoints, resume.

Runs in one process, or in several under `torchrun` (DDP: gloo on CPU, NCCL on GPU); rank 0 validates, logs and
writes checkpoints. Progress and metrics go to a `tracker` (the MLRun adapter, or nothing).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from aletheia.data.augment import to_tensor, training_augmentation
from aletheia.data.dataset import (
    FaceCropDataset,
    epoch_order,
    sampling_weights,
    sources_with_reals,
    split_by_group,
)
from aletheia.data.prepare import load_faces
from aletheia.evaluation import binary_metrics
from aletheia.models.checkpoints import load_checkpoint, load_state_dict_file
from aletheia.models.preprocessing import training_preprocessing
from aletheia.models.registry import create_model, get_config
from aletheia.training.config import TrainConfig

EpochCallback = Callable[[int, dict], None]


@dataclass
class TrainResult:
    output: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_training_faces(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation faces from the prepared folders; excluded methods leave training but stay in validation
    (so a leave-one-method-out run is evaluated on the method it never saw)."""
    faces = pd.concat([load_faces(d) for d in config.data], ignore_index=True)
    faces = faces[faces["kind"].isin(config.kinds) & ~faces["source"].isin(config.exclude_sources)]
    train, val = split_by_group(faces, config.val_fraction, config.seed)
    if config.exclude_methods:
        train = train[~train["method"].isin(config.exclude_methods)].reset_index(drop=True)
    if train["label"].nunique() < 2:
        raise ValueError(
            f"training data holds only {train['label'].unique().tolist()} faces: need real and fake"
        )
    if config.max_val_samples and len(val) > config.max_val_samples:
        val = val.sample(n=config.max_val_samples, random_state=config.seed).reset_index(drop=True)
    return train, val


def trained_groups(train_set: FaceCropDataset, balance: str) -> set[str]:
    """The real sources and fake methods training draws from (`balance: source` leaves out sources without reals)."""
    groups = train_set.groups
    if balance == "source":
        groups = groups[np.isin(train_set.sources, sources_with_reals(train_set.labels, train_set.sources))]
    return set(groups.tolist())


def selection_weights(val_set: FaceCropDataset, trained: set[str]) -> np.ndarray:
    """Weights (sum 1) of the validation loss that picks the best checkpoint, steps the schedule and stops early.

    Each class weighs half and every real source / fake method an equal share of it, so the largest source (UTKFace
    holds most validation reals) cannot decide alone. Groups the model does not train on get no weight: a method
    left out of training (or a generator never trained on) must not choose the checkpoint that is then tested on it.
    """
    in_training = np.isin(val_set.groups, list(trained))
    if not in_training.any():
        in_training[:] = True
    weights = np.zeros(len(val_set))
    weights[in_training] = sampling_weights(val_set.labels[in_training], val_set.groups[in_training])
    return weights


def build_model(config: TrainConfig) -> nn.Module:
    kwargs = {"pretrained": True} if "Lite" in config.model else {}
    model = create_model(config.model, **kwargs)
    if config.init_checkpoint:
        state = widen_head(load_state_dict_file(config.init_checkpoint), model)
        load_checkpoint(model, state, source=config.init_checkpoint)
    if hasattr(model, "set_swish"):
        # The plain swish trains ~40% faster on CPU than the memory-efficient one.
        model.set_swish(memory_efficient=False)
    return model


def widen_head(state: dict, model: nn.Module) -> dict:
    """A one-logit model's weights as the start of a model with a head per kind of fake: every kind's head starts
    as the one-logit model's, its bias lowered so the overall ("any kind") score starts near the old one (for small
    p, 1 - (1 - p/K)^K is about p), and the rest of the network is taken as it is."""
    kinds = getattr(model, "kinds", ())
    weight = state.get("classifier.weight")
    if not kinds or weight is None or weight.shape[0] != 1:
        return state
    widened = dict(state)
    widened["classifier.weight"] = weight.repeat(len(kinds), 1)
    widened["classifier.bias"] = state["classifier.bias"].repeat(len(kinds)) - math.log(len(kinds))
    return widened


def training_loss(logits: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """BCE on the overall fake logit (column 0); for models with a head per kind of fake, plus each kind's BCE on
    reals and that kind's fakes only (a face swap says nothing about whether a face was generated whole)."""
    logits = logits.float()
    is_fake = (kinds > 0).float()
    loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], is_fake)
    for column in range(1, logits.shape[1]):
        relevant = (kinds == 0) | (kinds == column)
        if relevant.any():
            loss = loss + nn.functional.binary_cross_entropy_with_logits(
                logits[relevant, column], is_fake[relevant]
            )
    return loss


def native_bf16(device: torch.device) -> bool:
    """Whether this device computes bfloat16 in hardware (CPU: AVX512-BF16 or AMX); elsewhere it is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_bf16_autocast(precision: str, device: torch.device) -> bool:
    """`auto` picks bf16 only where the hardware has it; a forced `bf16` without it is honoured, with a warning."""
    native = native_bf16(device)
    if precision == "bf16" and not native:
        warnings.warn(
            f"precision bf16 on a {device.type} without native bfloat16: it is emulated and trains several times "
            "slower than fp32 (use --precision auto or fp32)",
            stacklevel=2,
        )
    return precision == "bf16" or (precision == "auto" and native)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Replace `path` whole or not at all: write `<path>.tmp` beside it (bytes, or a function that writes to the
    open file), flush and fsync it, rename it over `path` and fsync the folder. A kill mid-write leaves at most a
    torn .tmp, which the next write overwrites; `path` itself is always the previous or the new version."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            data(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save, atomically (see write_atomic)."""
    write_atomic(path, lambda handle: torch.save(state, handle))


@torch.no_grad()
def evaluate_logits(
    model: nn.Module, loader: DataLoader, mean, std, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    for images, targets in loader:
        x = to_tensor(images.numpy(), mean, std).to(device).contiguous(memory_format=torch.channels_last)
        logits.append(model(x)[:, 0].float().cpu().numpy())  # the overall fake logit
        labels.append((targets > 0).numpy().astype(np.int64))
    return np.concatenate(logits), np.concatenate(labels)


def train(config: TrainConfig, on_epoch: EpochCallback | None = None, progress: bool = True) -> TrainResult:
    rank, world = _distributed()
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    device = torch.device(config.device)
    use_bf16 = use_bf16_autocast(config.precision, device)
    model_config = get_config(config.model)
    mean, std = model_config.mean, model_config.std

    train_faces, val_faces = load_training_faces(config)
    # Stored with every checkpoint, so inference crops and normalises faces as these were (one owner of both).
    preprocessing = training_preprocessing(
        model_config, train_faces.get("face_policy", []), train_faces.get("crop_size", [])
    )
    if rank == 0:
        config.to_yaml(output / "config.yaml")
        pd.DataFrame({"split": ["train", "val"], "faces": [len(train_faces), len(val_faces)]}).to_csv(
            output / "split.csv", index=False
        )
        val_faces.to_csv(output / "val_faces.csv", index=False)
    train_set = FaceCropDataset(
        train_faces,
        training_augmentation(config.augment_strength, config.equalise_quality, config.crop_jitter),
        config.seed,
        retouch=config.retouch,
        sources=train_faces["source"].astype(str).replace(config.pair_sources).to_numpy(),
        blend_mask=config.blend_mask,
        pseudo_decoders=config.pseudo_decoders,
        reframe=config.reframe,
    )
    val_set = FaceCropDataset(val_faces)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)
    val_weights = torch.from_numpy(selection_weights(val_set, trained_groups(train_set, config.balance)))

    model = build_model(config).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.plateau_factor, patience=config.plateau_patience
        )

    last_path, best_path = output / "last.pth", output / "best.pth"
    start_epoch, best_loss, best_epoch, history = 0, float("inf"), -1, []
    if config.resume and last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_loss, best_epoch = state["epoch"] + 1, state["best_val_loss"], state["best_epoch"]
        history = (
            json.loads((output / "history.json").read_text()) if (output / "history.json").exists() else []
        )
        # history.json is written before last.pth: after a kill between the two it holds an epoch to be redone.
        history = [record for record in history if record["epoch"] < start_epoch]
        if rank == 0:
            print(f"resuming {output} at epoch {start_epoch}")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    steps = config.steps_per_epoch
    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if epoch - best_epoch > config.early_stopping and best_epoch >= 0:
            stopped_early = True
            break
        started = time.perf_counter()
        length = len(train_set) if steps is None else min(len(train_set), steps * config.batch_size * world)
        order = epoch_order(
            train_set.labels,
            train_set.groups,
            config.balance,
            config.self_blend,
            epoch,
            config.seed,
            length,
            train_set.sources,
            config.pseudo_generate,
            config.source_shares,
        )[rank::world]
        loader = DataLoader(
            Subset(train_set, order.tolist()),
            batch_size=config.batch_size,
            num_workers=config.num_workers,
            shuffle=False,
            drop_last=len(order) > config.batch_size,
        )
        net.train()
        total, seen, observed_batch_size = 0.0, 0, None
        bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress or rank != 0, unit="batch")
        for images, targets in bar:
            x = to_tensor(images.numpy(), mean, std).to(device).contiguous(memory_format=torch.channels_last)
            y = targets.to(device)
            observed_batch_size = observed_batch_size or len(
                y
            )  # proof that a searched batch size took effect
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = net(x)
            loss = training_loss(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{total / max(1, seen):.4f}")
        train_seconds = time.perf_counter() - started

        if world > 1:
            dist.barrier()
        record: dict = {}
        if rank == 0:
            logits, labels = evaluate_logits(model, val_loader, mean, std, device)
            per_face = nn.functional.binary_cross_entropy_with_logits(
                torch.from_numpy(logits).double(), torch.from_numpy(labels).double(), reduction="none"
            )
            val_loss = float((per_face * val_weights).sum())  # balanced over the groups trained on
            metrics = binary_metrics(labels, 1.0 / (1.0 + np.exp(-logits)), threshold=0.5)
            record = {
                "epoch": epoch, "train_loss": total / max(1, seen), "val_loss": val_loss,
                "val_auc": metrics["auc"], "val_balanced_accuracy": metrics["balanced_accuracy"],
                "val_log_loss": metrics["log_loss"], "lr": optimizer.param_groups[0]["lr"],
                "observed_batch_size": observed_batch_size, "train_images": seen * world,
                "train_images_per_second": seen * world / max(train_seconds, 1e-9), "epoch_seconds": time.perf_counter() - started,
            }  # fmt: skip
            history.append(record)
            if config.lr_schedule == "cosine":
                scheduler.step()
            else:
                scheduler.step(val_loss)
            # History first, then the checkpoints, each replaced whole (write_atomic): a kill at any point leaves
            # a resumable last.pth and a history that lacks no epoch of it (resume drops any epoch beyond it).
            write_atomic(output / "history.json", json.dumps(history, indent=1).encode())
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                save_checkpoint(
                    {
                        "net": model.state_dict(),
                        "architecture": config.model,
                        "preprocessing": preprocessing.to_json(),
                        "epoch": epoch,
                        "val_loss": val_loss,
                    },
                    best_path,
                )
            save_checkpoint(
                {"net": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "epoch": epoch, "best_val_loss": best_loss, "best_epoch": best_epoch},
                last_path,
            )  # fmt: skip
            if on_epoch is not None:
                on_epoch(epoch, record)
            if progress:
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        if world > 1:
            # Every rank must agree on the schedule: share rank 0's best epoch and learning rate.
            shared = torch.tensor([best_epoch, optimizer.param_groups[0]["lr"]], dtype=torch.float64)
            dist.broadcast(shared, 0)
            best_epoch = int(shared[0])
            for group in optimizer.param_groups:
                group["lr"] = float(shared[1])
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(output, best_path, best_epoch, best_loss, history, stopped_early)
