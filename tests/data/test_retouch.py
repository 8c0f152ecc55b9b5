"""The face-only beauty filter: skin flattens, edges and background stay, and training gives it to either class."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from aletheia.data.dataset import FaceCropDataset
from aletheia.data.retouch import retouch_face

FACE_BOX = np.array([62.0, 50.0, 162.0, 170.0])  # crop pixels


def _textured_face() -> np.ndarray:
    """A flat 'skin' tone with fine noise (pores), one hard edge (an eyebrow) across the face, on a noisy backdrop."""
    rng = np.random.default_rng(0)
    image = np.full((224, 224, 3), (200, 160, 140), np.float64) + rng.normal(0, 12, (224, 224, 3))
    image[95:100, 80:145] = 40
    return np.clip(image, 0, 255).astype(np.uint8)


def _detail(image: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)[region].var())


def test_retouch_flattens_the_skin_keeps_edges_and_leaves_the_background() -> None:
    face = _textured_face()
    smooth = retouch_face(face, FACE_BOX, np.random.default_rng(1))
    cheek = (slice(115, 150), slice(90, 135))
    assert _detail(smooth, cheek) < 0.5 * _detail(face, cheek)
    brow = face[92:103, 95:130].astype(int).mean(axis=(1, 2))
    brow_after = smooth[92:103, 95:130].astype(int).mean(axis=(1, 2))
    assert brow_after.max() - brow_after.min() > 0.8 * (brow.max() - brow.min())  # the edge survives
    assert np.array_equal(smooth[:15], face[:15]) and np.array_equal(smooth[:, :20], face[:, :20])


def _faces_on_disk(tmp_path, labels: list[str]) -> pd.DataFrame:
    rows = []
    for i, label in enumerate(labels):
        path = tmp_path / f"{i}.png"
        Image.fromarray(_textured_face()).save(path)
        rows.append({"crop": str(path), "label": label, "source": "s", "method": "m" if label == "fake" else "r",
                     "x0": 62.0, "y0": 50.0, "x1": 162.0, "y1": 170.0, "width": 224, "height": 224,
                     "face_policy": "scale", "crop_size": 224})  # fmt: skip
    return pd.DataFrame(rows)


def test_training_faces_of_both_classes_get_the_filter_at_the_configured_share(tmp_path) -> None:
    faces = _faces_on_disk(tmp_path, ["real", "fake"] * 30)
    plain, retouched = FaceCropDataset(faces), FaceCropDataset(faces, retouch=0.5)
    changed = {"real": [], "fake": []}
    for index in range(len(faces)):
        image, label = retouched[index]
        changed["fake" if label else "real"].append(
            not np.array_equal(image.numpy(), plain[index][0].numpy())
        )
    for label, flags in changed.items():
        assert 0.2 < np.mean(flags) < 0.8, label  # either class, about half of the draws
    pseudo_fake, label = FaceCropDataset(faces, retouch=1.0)[len(faces)]  # self-blended draws too
    assert label == 1 and pseudo_fake.shape == (224, 224, 3)
    assert all(np.array_equal(FaceCropDataset(faces)[i][0].numpy(), plain[i][0].numpy()) for i in range(4))
