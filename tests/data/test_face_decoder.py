"""Pseudo-generated faces from decoders trained on real faces: training really learns to rebuild faces, a draw
keeps the crop's size and content, and the dataset hands the decoders' faces out as GENERATED fakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from aletheia.data.dataset import GENERATED, FaceCropDataset
from aletheia.data.face_decoder import (
    PATCH,
    FaceAutoencoder,
    _patches,
    decoder_generate,
    load_decoders,
    reconstruction_loss,
    save_decoders,
    train_decoder,
)


def _photo_like(seed: int, size: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    base = 128 + 60 * np.sin((5 + seed) * xs + 3 * ys)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("crops")
    paths = []
    for seed in range(6):
        path = folder / f"{seed}.png"
        Image.fromarray(_photo_like(seed)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def decoders(crops, tmp_path_factory) -> str:
    torch.set_num_threads(2)
    models = {kind: train_decoder(kind, crops, steps=60, batch=4) for kind in ("transposed", "nearest")}
    path = tmp_path_factory.mktemp("decoders") / "decoders.pth"
    save_decoders(models, str(path))
    return str(path)


def test_training_learns_to_rebuild_faces(crops, decoders) -> None:
    batch = _patches(crops, 8, np.random.default_rng(99))
    assert batch.shape == (8, 3, PATCH, PATCH)
    with torch.no_grad():
        untrained = reconstruction_loss(FaceAutoencoder("transposed")(batch), batch).item()
        trained = {k: reconstruction_loss(m(batch), batch).item() for k, m in load_decoders(decoders).items()}
    assert set(trained) == {"transposed", "nearest"}
    assert all(loss < 0.5 * untrained for loss in trained.values()), (untrained, trained)


def test_a_draw_keeps_size_and_content_of_any_crop(decoders) -> None:
    models = load_decoders(decoders)
    crop = _photo_like(3, 200)[:157, :203]  # sides not divisible by 8
    made = [decoder_generate(crop, models, np.random.default_rng(seed)) for seed in range(4)]
    for fake in made:
        assert fake.shape == crop.shape and fake.dtype == np.uint8
        assert np.abs(fake.astype(int) - crop).mean() < 25  # the same picture, rebuilt
        assert not np.array_equal(fake, crop)
    assert not np.array_equal(made[0], made[1])


def test_unknown_upsampler_and_missing_budget_are_refused(crops) -> None:
    with pytest.raises(ValueError, match="upsampler"):
        FaceAutoencoder("bicubic")
    with pytest.raises(ValueError, match="minutes or steps"):
        train_decoder("nearest", crops)


def test_dataset_hands_out_decoder_faces_as_generated(crops, decoders) -> None:
    faces = pd.DataFrame({"crop": crops, "label": "real", "method": "real", "source": "s", "group": crops,
                          "x0": 40.0, "y0": 40.0, "x1": 120.0, "y1": 120.0, "width": 160, "height": 160,
                          "face_policy": "scale", "crop_size": 160})  # fmt: skip
    dataset = FaceCropDataset(faces, pseudo_decoders=decoders)
    image, label = dataset[2 * len(faces) + 1]
    original, real_label = dataset[1]
    assert label == GENERATED and real_label == 0
    assert image.shape == original.shape
    assert not torch.equal(image, original)
