"""Framing equalised across sources: a re-framed crop shows its face at a share of the width drawn from 60-95%,
zooming a loosely framed face in and a tight one out, about the face's own centre."""

from __future__ import annotations

import numpy as np

from aletheia.data.framing import FACE_SHARES, ZOOM_LIMITS, reframe


def _square_face(side: int, face: int) -> tuple[np.ndarray, np.ndarray]:
    crop = np.full((side, side, 3), 30, np.uint8)
    start = (side - face) // 2
    crop[start : start + face, start : start + face] = 220
    return crop, np.array([start, start, start + face, start + face], dtype=np.float64)


def _face_share(image: np.ndarray) -> float:
    """The bright run through the centre of the middle row (reflected copies beyond the border do not count)."""
    row = image[image.shape[0] // 2, :, 0] > 125
    centre = len(row) // 2
    left = centre - np.argmin(row[centre::-1]) if not row[centre::-1].all() else 0
    right = centre + np.argmin(row[centre:]) if not row[centre:].all() else len(row)
    return float((right - left) / len(row))


def test_loose_faces_zoom_in_and_tight_faces_zoom_out() -> None:
    loose, loose_box = _square_face(224, 141)  # 0.63, as FFHQ or a whole photo
    tight, tight_box = _square_face(224, 206)  # 0.92, as FF++
    loose_shares = [_face_share(reframe(loose, loose_box, np.random.default_rng(s))) for s in range(20)]
    tight_shares = [_face_share(reframe(tight, tight_box, np.random.default_rng(s))) for s in range(20)]
    assert min(loose_shares) >= FACE_SHARES[0] - 0.02 and max(loose_shares) <= FACE_SHARES[1] + 0.02
    assert np.mean(loose_shares) > 0.7  # mostly zoomed in
    assert max(tight_shares) <= FACE_SHARES[1] + 0.02 and np.mean(tight_shares) < 0.85  # mostly zoomed out
    # Zooming out stops at the limit: never less than 0.7 of the face's size.
    assert min(tight_shares) >= 0.92 * ZOOM_LIMITS[0] - 0.02


def test_the_face_stays_where_it_was() -> None:
    crop, box = _square_face(224, 141)
    out = reframe(crop, box, np.random.default_rng(3))
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert out[112, 112, 0] == 220  # the face's centre is still face
