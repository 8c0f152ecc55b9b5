"""Pseudo-generated faces: a generator's periodic upsampling trace on a real face, its sharpness kept; the dataset
and the source-balanced sampler hand them out as GENERATED fakes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aletheia.data.dataset import (
    GENERATED,
    MANIPULATED,
    REAL,
    FaceCropDataset,
    epoch_order,
    face_kinds,
    fake_kind,
)
from aletheia.data.pseudo_generate import pseudo_generate


def _photo_like(seed: int = 0) -> np.ndarray:
    """Smooth shapes plus fine texture: enough structure at every scale to show blur or a periodic pattern."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:224, 0:224] / 224.0
    base = 128 + 60 * np.sin(6 * xs + 3 * ys)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + rng.normal(0, 10, (224, 224, 3)), 0, 255).astype(np.uint8)


def _period_two_energy(image: np.ndarray) -> float:
    """Spectral power at the 2-pixel period (the Nyquist lines) relative to all non-DC power."""
    gray = image.astype(np.float64).mean(axis=2)
    spectrum = np.abs(np.fft.fft2(gray - gray.mean())) ** 2
    h, w = gray.shape
    return float((spectrum[h // 2, :].sum() + spectrum[:, w // 2].sum()) / spectrum.sum())


def _detail(image: np.ndarray) -> float:
    gray = image.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(gray, axis=1)).mean())


def test_pseudo_generated_face_keeps_content_and_sharpness_but_gains_an_upsampling_trace() -> None:
    real = _photo_like()
    made = [pseudo_generate(real, np.random.default_rng(seed)) for seed in range(8)]
    for fake in made:
        assert fake.shape == real.shape and fake.dtype == np.uint8
        assert np.abs(fake.astype(int) - real).mean() < 12  # the same face, not a new picture
        assert _detail(fake) > 0.6 * _detail(real)  # not simply blurred: "blurry means generated" is no cue
    traced = [_period_two_energy(f) > 1.2 * _period_two_energy(real) for f in made]
    assert sum(traced) >= 4  # most draws leave a 2-pixel periodic trace a natural resize would not
    assert not np.array_equal(made[0], made[1])  # every draw a different "generator"


def test_pseudo_generate_handles_sizes_not_divisible_by_eight() -> None:
    crop = _photo_like()[:157, :203]
    out = pseudo_generate(crop, np.random.default_rng(5))
    assert out.shape == crop.shape


def test_fake_kind_tells_generated_from_manipulated_methods() -> None:
    assert fake_kind("StyleGAN3-R (ffhq-1024, psi 0.5-1.0, resized 256)") == GENERATED
    assert fake_kind("Stable Diffusion 2.1") == GENERATED
    for method in ("FF++ Deepfakes, Haar face crop 299px", "FF++ Face2Face", "InSwapper (insightface)", "original"):
        assert fake_kind(method) == MANIPULATED
    faces = pd.DataFrame({"label": ["real", "fake", "fake", "fake"],
                          "method": ["original", "FF++ FaceSwap", "StyleGAN2", "my tool"],
                          "fake_kind": ["", "", "", "generated"]})  # fmt: skip
    assert face_kinds(faces).tolist() == [REAL, MANIPULATED, GENERATED, GENERATED]


def _faces(tmp_path, labels: list[str], sources: list[str]) -> pd.DataFrame:
    rows = []
    for i, (label, source) in enumerate(zip(labels, sources, strict=True)):
        path = tmp_path / f"{i}.png"
        Image.fromarray(_photo_like(i)).save(path)
        rows.append({"crop": str(path), "label": label, "source": source,
                     "method": "StyleGAN3" if source == "gan" else ("swap" if label == "fake" else "original"),
                     "x0": 62.0, "y0": 50.0, "x1": 162.0, "y1": 170.0, "width": 224, "height": 224,
                     "face_policy": "scale", "crop_size": 224})  # fmt: skip
    return pd.DataFrame(rows)


def test_dataset_indexes_self_blended_and_pseudo_generated_faces(tmp_path) -> None:
    faces = _faces(tmp_path, ["real", "real", "fake", "fake"], ["a", "a", "a", "gan"])
    data = FaceCropDataset(faces)
    n = len(data)
    assert [data[i][1] for i in range(n)] == [REAL, REAL, MANIPULATED, GENERATED]
    assert data[n][1] == MANIPULATED  # self-blend of real face 0
    image, kind = data[2 * n + 1]  # pseudo-generated from real face 1
    assert kind == GENERATED
    assert not np.array_equal(image.numpy(), data[1][0].numpy())


def test_source_balance_pairs_a_fake_only_source_and_mixes_in_pseudo_generated_faces(tmp_path) -> None:
    faces = _faces(tmp_path, ["real"] * 20 + ["fake"] * 10 + ["real"] * 20, ["ffhq"] * 20 + ["gan"] * 10 + ["b"] * 20)
    paired = faces["source"].replace({"gan": "ffhq"}).to_numpy()
    data = FaceCropDataset(faces, sources=paired)
    order = epoch_order(data.labels, data.groups, "source", 0.5, 0, 0, length=20_000, sources=data.sources,
                        pseudo_generate=0.3)  # fmt: skip
    n = len(data)
    generated, blended, own = order >= 2 * n, (order >= n) & (order < 2 * n), order < n
    fake_draws = generated | blended | (own & (data.labels[order % n] == 1))
    assert 0.47 < fake_draws.mean() < 0.53
    assert 0.25 < generated[fake_draws].mean() < 0.35
    assert (data.labels[(order[generated] - 2 * n)] == 0).all()  # made from real faces only
    gan_draws = own & (order >= 20) & (order < 30)
    assert gan_draws.any()  # the GAN's fakes are drawn: they balance against the FFHQ reals
    with pytest.warns(UserWarning, match="gan"):  # unpaired, they cannot be balanced and are left out
        unpaired = epoch_order(data.labels, data.groups, "source", 0.5, 0, 0, length=2000,
                               sources=faces["source"].to_numpy())  # fmt: skip
    assert not ((unpaired >= 20) & (unpaired < 30)).any()
    with pytest.raises(ValueError, match="balance 'source'"):
        epoch_order(data.labels, data.groups, "method", 0.5, 0, 0, pseudo_generate=0.3)


def test_source_shares_draw_a_named_source_more_often_and_keep_it_half_real(tmp_path) -> None:
    faces = _faces(tmp_path, ["real", "fake"] * 10 + ["real", "fake"] * 10, ["ff"] * 20 + ["b"] * 20)
    data = FaceCropDataset(faces, sources=faces["source"].to_numpy())
    n = len(data)

    def draws(**shares: float) -> tuple[float, float]:
        order = epoch_order(data.labels, data.groups, "source", 0.0, 0, 0, length=20_000, sources=data.sources,
                            source_shares=shares)  # fmt: skip
        from_ff = order % n < 20
        return from_ff.mean(), data.labels[order[from_ff] % n].mean()

    assert draws() == pytest.approx((0.5, 0.5), abs=0.02)
    assert draws(ff=3.0) == pytest.approx((0.75, 0.5), abs=0.02)  # 3 to 1, and still half fake
    with pytest.raises(ValueError, match="not drawn from"):
        draws(nowhere=2.0)
    with pytest.raises(ValueError, match="balance 'source'"):
        epoch_order(data.labels, data.groups, "method", 0.0, 0, 0, source_shares={"ff": 2.0})


def test_landmark_blend_masks_the_mesh_hull_and_falls_back_to_the_ellipse_without_a_face(tmp_path) -> None:
    from aletheia.data.self_blend import self_blend
    from aletheia.faces.extract import FaceDetector, crop_face
    from aletheia.io import load_image

    astronaut = load_image("examples/astronaut.jpg")
    box = FaceDetector().detect(astronaut)[0].box
    face = crop_face(astronaut, box, "scale", 224, 0.2)  # cut as `aletheia prepare` cuts training faces
    path = tmp_path / "face.png"
    Image.fromarray(face).save(path)
    x0, y0, x1, y1 = map(float, box)
    faces = pd.DataFrame([{"crop": str(path), "label": "real", "source": "s", "method": "original",
                           "x0": x0, "y0": y0, "x1": x1, "y1": y1, "width": astronaut.shape[1],
                           "height": astronaut.shape[0], "face_policy": "scale", "crop_size": 224}])  # fmt: skip
    landmarks, ellipse = FaceCropDataset(faces, blend_mask="landmarks"), FaceCropDataset(faces)
    made, kind = landmarks[1]
    assert kind == MANIPULATED
    expected_ellipse = self_blend(face, ellipse.face_box(0), ellipse._rng(1, 0))
    assert not np.array_equal(made.numpy(), expected_ellipse)  # the mesh's hull, not the box's ellipse
    assert np.array_equal(ellipse[1][0].numpy(), expected_ellipse)
    noise = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)  # no face for the mesh to find: the ellipse it is
    no_face = FaceCropDataset(faces, blend_mask="landmarks")
    assert np.array_equal(no_face[1][0].numpy(), self_blend(noise, no_face.face_box(0), no_face._rng(1, 0)))
    with pytest.raises(ValueError, match="blend_mask"):
        FaceCropDataset(faces, blend_mask="circle")
