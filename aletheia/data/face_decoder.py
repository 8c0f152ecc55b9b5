"""Pseudo-generated faces from small decoders trained here on real faces only (Zhang, Karaman & Chang 2019).

`aletheia.data.pseudo_generate` gives a real crop the upsampling trace of random, untrained kernels. This module
is the other way the paper describes: an autoencoder trained to rebuild real faces, whose decoder paints every
pixel back through learnt upsampling layers, so its output carries what a generator's decoder does to a face (its
upsampling pattern and the texture a decoder synthesises in place of the photo's own), learnt rather than random.
Two decoders are trained, one upsampling with transposed convolutions (GANs), one with nearest-neighbour
resizing and a convolution (diffusion VAEs); a draw picks one, a scale to run it at, and how much of the photo's
finest detail to put back, so "blurry" alone never marks the class.

    .venv/bin/python scripts/train_face_decoder.py --data PREPARED --output DECODERS.pth   # about 10 minutes

The weights are a training asset (a few hundred kB), made from the training split's real faces only.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

UPSAMPLERS = ("transposed", "nearest")
PATCH = 128  # training patches, at the crops' own scale


def _up(channels_in: int, channels_out: int, kind: str) -> nn.Module:
    if kind == "transposed":
        return nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels_in, channels_out, 3, padding=1))


class FaceAutoencoder(nn.Module):
    """An 8x-downsampling encoder and a decoder of three 2x upsamplers of one kind; RGB in [0, 1] both ways."""

    def __init__(self, upsampler: str = "transposed", width: int = 32) -> None:
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        self.upsampler = upsampler
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), act(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), act(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), act(),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            _up(4 * w, 2 * w, upsampler), act(),
            _up(2 * w, w, upsampler), act(),
            _up(w, w, upsampler), act(),
            nn.Conv2d(w, 3, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def save_decoders(models: dict[str, FaceAutoencoder], path: str) -> None:
    """Every decoder's weights in one file, in half precision (loaded back into the float model)."""
    torch.save({kind: {k: v.half() for k, v in m.state_dict().items()} for kind, m in models.items()}, path)


def load_decoders(path: str) -> dict[str, FaceAutoencoder]:
    states = torch.load(path, map_location="cpu", weights_only=True)
    models = {}
    for kind, state in states.items():
        model = FaceAutoencoder(kind)
        model.load_state_dict(state)
        models[kind] = model.eval()
    return models


@torch.no_grad()
def reconstruct(model: FaceAutoencoder, image: np.ndarray) -> np.ndarray:
    """The decoder's version of an RGB uint8 image (any size: padded to a multiple of 8, cut back), float32 0-255."""
    h, w = image.shape[:2]
    ph, pw = (-h) % 8, (-w) % 8
    padded = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else image
    x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float() / 255.0
    out = model(x)[0].permute(1, 2, 0).numpy() * 255.0
    return out[:h, :w]


def decoder_generate(crop: np.ndarray, models: dict[str, FaceAutoencoder], rng: np.random.Generator) -> np.ndarray:
    """A pseudo-generated face from one real crop (RGB uint8): rebuilt by a trained decoder at the crop's scale or
    at half of it, with a random share of the photo's finest detail put back."""
    h, w = crop.shape[:2]
    model = models[UPSAMPLERS[int(rng.integers(len(UPSAMPLERS)))] if len(models) > 1 else next(iter(models))]
    scale = 1.0 if rng.random() < 0.5 else 0.5
    image = crop
    if scale != 1.0:
        image = cv2.resize(crop, (max(8, int(w * scale)), max(8, int(h * scale))), interpolation=cv2.INTER_AREA)
    generated = reconstruct(model, image)
    if scale != 1.0:
        generated = cv2.resize(generated, (w, h), interpolation=cv2.INTER_LINEAR)
    original = crop.astype(np.float32)
    detail = original - cv2.GaussianBlur(original, (0, 0), rng.uniform(0.8, 1.6))
    return np.clip(generated + detail * rng.uniform(0.0, 0.8), 0, 255).astype(np.uint8)


def _patches(paths: list[str], count: int, rng: np.random.Generator) -> torch.Tensor:
    """`count` random PATCH-pixel squares (half mirrored) from the crops at `paths`, as a float batch in [0, 1]."""
    out = []
    for path in rng.choice(paths, size=count):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read cached crop {path}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        y, x = rng.integers(0, h - PATCH + 1), rng.integers(0, w - PATCH + 1)
        patch = image[y : y + PATCH, x : x + PATCH]
        out.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
    return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).float() / 255.0


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on pixels and on their horizontal and vertical differences, so edges come back rather than averaged."""

    def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (oy, ox), (ty, tx) = gradients(output), gradients(target)
    return F.l1_loss(output, target) + F.l1_loss(oy, ty) + F.l1_loss(ox, tx)


def train_decoder(
    upsampler: str, paths: list[str], *, minutes: float | None = None, steps: int | None = None,
    batch: int = 16, seed: int = 0,
) -> FaceAutoencoder:  # fmt: skip
    """An autoencoder trained to rebuild real face crops (at least PATCH pixels a side) for `minutes` or `steps`."""
    if (minutes is None) == (steps is None):
        raise ValueError("give minutes or steps")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FaceAutoencoder(upsampler)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    deadline = None if minutes is None else time.monotonic() + minutes * 60
    done = 0
    with tqdm(desc=f"decoder {upsampler}", unit="step", total=steps) as bar:
        while (done < steps) if deadline is None else (time.monotonic() < deadline):
            target = _patches(paths, batch, rng)
            loss = reconstruction_loss(model(target), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            done += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval()
