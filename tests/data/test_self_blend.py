"""Self-blended pseudo-fakes change the face and only the face; the sampler mixes them in as fakes."""

from __future__ import annotations

import numpy as np
import pytest

from aletheia.data.dataset import mix_in_self_blended
from aletheia.data.self_blend import blend_mask, self_blend


def _textured_crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(30, 220, size=(224, 224, 3), dtype=np.uint8)


def test_blend_changes_the_face_region_only() -> None:
    crop, box = _textured_crop(), np.array([62.0, 50.0, 162.0, 170.0])
    rng = np.random.default_rng(3)
    fake = self_blend(crop, box, rng)
    changed = np.abs(fake.astype(int) - crop).sum(axis=2) > 0
    inside = np.zeros_like(changed)
    inside[30:195, 40:185] = True  # the face box with room for the mask's random growth and feathering
    assert changed[inside].mean() > 0.3  # the face was blended with its altered copy
    assert not changed[~inside].any()  # the background is untouched


def test_mask_is_soft_and_follows_the_box() -> None:
    mask = blend_mask((224, 224), np.array([100.0, 100.0, 180.0, 200.0]), np.random.default_rng(0))
    assert mask.max() > 0.99 and mask[:60].max() == 0.0 and mask[:, :70].max() == 0.0
    assert ((mask > 0.05) & (mask < 0.95)).any()  # feathered, not a hard edge
    ys, xs = np.nonzero(mask > 0.5)
    assert 120 < xs.mean() < 160 and 130 < ys.mean() < 175


def test_mixing_replaces_only_fake_draws_with_real_sources() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    order = np.tile(np.arange(6), 200)
    mixed = mix_in_self_blended(order, labels, 0.5, epoch=0, seed=0)
    replaced = mixed >= len(labels)
    assert not replaced[labels[order] == 0].any()  # real draws stay real
    assert 0.4 < replaced[labels[order] == 1].mean() < 0.6
    assert set(mixed[replaced] - len(labels)) <= {0, 1, 2}  # made from real faces
    assert (mix_in_self_blended(order, labels, 0.0, 0, 0) == order).all()


def test_method_balanced_weights_give_every_source_an_equal_share() -> None:
    from aletheia.data.dataset import epoch_indices, sampling_weights

    labels = np.array([0] * 90 + [0] * 10 + [1] * 20)
    methods = np.array(["utk"] * 90 + ["ffpp"] * 10 + ["deepfakes"] * 20)
    weights = sampling_weights(labels, methods)
    assert weights[:90].sum() == pytest.approx(0.25) and weights[90:100].sum() == pytest.approx(0.25)
    assert weights[100:].sum() == pytest.approx(0.5)
    order = epoch_indices(labels, "method", epoch=0, seed=0, length=4000, groups=methods)
    assert 0.2 < (order >= 90).mean() - (order >= 100).mean() < 0.3  # the small real source: about a quarter
    plain = epoch_indices(labels, "sampler", epoch=0, seed=0, length=4000, groups=methods)
    assert ((plain >= 90) & (plain < 100)).mean() < 0.1  # class balance alone leaves it at 5% of draws
    mixed = mix_in_self_blended(order, labels, 1.0, 0, 0, weights)
    sources = mixed[mixed >= len(labels)] - len(labels)
    assert 0.4 < (sources >= 90).mean() < 0.6  # pseudo-fakes come from both real sources alike


def test_epoch_order_balances_real_sources_and_fake_methods_as_training_draws_them() -> None:
    """The path the training loop takes: groups come from the faces table (source for reals, method for fakes)."""
    import pandas as pd

    from aletheia.data.dataset import FaceCropDataset, epoch_order

    faces = pd.DataFrame(
        {
            "crop": [f"{i}.png" for i in range(130)],
            "label": ["real"] * 100 + ["fake"] * 30,
            "source": ["utkface"] * 90 + ["ffpp"] * 10 + ["ffpp"] * 30,
            "method": ["in the wild"] * 90 + ["original"] * 10 + ["deepfakes"] * 25 + ["faceswap"] * 5,
        }
    )
    data = FaceCropDataset(faces)
    assert set(data.groups) == {"real: utkface", "real: ffpp", "fake: deepfakes", "fake: faceswap"}
    order = epoch_order(data.labels, data.groups, "method", 0.5, epoch=0, seed=0, length=8000)
    real_draws, pseudo = order[order < 100], order[order >= len(data)] - len(data)
    assert 0.4 < (real_draws >= 90).mean() < 0.6  # 10 FF++ reals drawn as often as 90 UTKFace ones
    assert 0.4 < (pseudo >= 90).mean() < 0.6  # pseudo-fakes too
    fakes = order[(order >= 100) & (order < len(data))]
    assert 0.4 < (fakes >= 125).mean() < 0.6  # 5 FaceSwap fakes as often as 25 Deepfakes ones
    plain = epoch_order(data.labels, data.groups, "sampler", 0.5, epoch=0, seed=0, length=8000)
    assert (plain[plain < 100] >= 90).mean() < 0.2


def test_source_balance_makes_every_dataset_half_real_half_fake() -> None:
    import pandas as pd

    from aletheia.data.dataset import FaceCropDataset, epoch_order

    faces = pd.DataFrame(
        {
            "crop": [f"{i}.png" for i in range(150)],
            "label": ["real"] * 90 + ["real"] * 10 + ["fake"] * 30 + ["fake"] * 20,
            "source": ["utkface"] * 90 + ["ffpp"] * 40 + ["stylegan"] * 20,
            "method": ["wild"] * 90
            + ["original"] * 10
            + ["deepfakes"] * 25
            + ["faceswap"] * 5
            + ["sg3"] * 20,
        }
    )
    data = FaceCropDataset(faces)
    with pytest.warns(UserWarning, match="stylegan"):  # fakes only: cannot be balanced, so left out
        order = epoch_order(
            data.labels, data.groups, "source", 0.3, 0, 0, length=20_000, sources=data.sources
        )
    pseudo = order >= len(data)
    source = np.where(
        pseudo, data.sources[np.where(pseudo, order - len(data), 0)], data.sources[order % len(data)]
    )
    label = np.where(pseudo, 1, data.labels[order % len(data)])
    assert not (source == "stylegan").any()
    for name in ("utkface", "ffpp"):
        assert 0.45 < (source == name).mean() < 0.55
        assert 0.47 < label[source == name].mean() < 0.53  # the dataset says nothing about the label
    assert pseudo[source == "utkface"].sum() == (label[source == "utkface"] == 1).sum()  # no fakes of its own
    ffpp_fakes = (source == "ffpp") & (label == 1)
    assert 0.25 < pseudo[ffpp_fakes].mean() < 0.35  # self_blend of its fake draws
    manipulated = order[ffpp_fakes & ~pseudo]
    assert 0.45 < (manipulated >= 125).mean() < 0.55  # methods equally often
