"""Synthetic make-up on a face (lipstick, eye shadow, eyeliner, blush), placed by the 468-point face mesh.

Why: self-blended pseudo-fakes teach that a region of the face whose colour differs from the rest, under a soft
outline that follows the face's landmarks, was pasted in. Lipstick, eye shadow and blush are exactly that, and the
real photos the default model called fake are mostly made-up faces (red-carpet and studio portraits); the beauty
filter (aletheia.data.retouch) covers smooth skin, not colour. Giving make-up to a share of every class's training
faces makes it no sign of either class, so the model has to rely on what a blend leaves and make-up does not (a
seam through the skin, misalignment, the pasted face's own lighting). `benchmarks/generalisation_report.py`
measures it with a fixed look of its own (`MAKEUP_CHECK`), not the training draws.

Colour goes on as make-up does: the face's own shading kept (a tint of the lightness it had), so the result stays
a photograph of a made-up face rather than a painted patch.
"""

from __future__ import annotations

import cv2
import numpy as np

# MediaPipe face-mesh rings (see aletheia.faces.landmarks). Outer and inner lip outlines:
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
# Each eye's outline, and its upper lid from the outer to the inner corner, and the brow above it.
EYES = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
)
UPPER_LIDS = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (263, 466, 388, 387, 386, 385, 384, 398, 362))
BROWS = ((46, 53, 52, 65, 55), (276, 283, 282, 295, 285))
CHEEKS = (205, 425)  # the cheekbones' centres

# Colours (RGB) make-up comes in: reds to nudes for lips, browns to plums and golds for lids, pinks for cheeks.
LIP_COLOURS = ((170, 20, 40), (200, 40, 70), (150, 40, 60), (190, 90, 90), (120, 30, 50), (210, 110, 110))
SHADOW_COLOURS = ((110, 70, 60), (140, 90, 110), (80, 60, 70), (170, 130, 90), (90, 80, 120), (60, 45, 40))
BLUSH_COLOURS = ((230, 120, 120), (220, 100, 110), (210, 130, 100))
LINER_COLOUR = (25, 20, 20)


def _polygon_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.float32)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return mask


def _tint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], strength: float) -> np.ndarray:
    """Colour under `mask` (0-1) moved towards `colour` with the region's own light and shade kept."""
    lightness = image.mean(axis=2, keepdims=True)
    region = mask > 0.5
    level = float(lightness[region].mean()) if region.any() else float(lightness.mean())
    tinted = np.asarray(colour, np.float32) * (lightness / max(level, 1.0)) * (0.6 + 0.4 * level / 255.0)
    alpha = (mask * strength)[..., None]
    return image * (1.0 - alpha) + np.clip(tinted, 0, 255) * alpha


def _size(points: np.ndarray) -> float:
    extent = points.max(axis=0) - points.min(axis=0)
    return float(np.sqrt(max(extent[0], 1.0) * max(extent[1], 1.0)))


def lipstick(image: np.ndarray, points: np.ndarray, colour, strength: float, size: float) -> np.ndarray:
    lips = _polygon_mask(image.shape[:2], points[list(LIPS_OUTER)])
    lips -= _polygon_mask(image.shape[:2], points[list(LIPS_INNER)])
    mask = cv2.GaussianBlur(np.clip(lips, 0, 1), (0, 0), max(0.5, 0.006 * size))
    return _tint(image, mask, colour, strength)


def eye_shadow(image: np.ndarray, points: np.ndarray, colour, strength: float, size: float) -> np.ndarray:
    """The lid between the upper lash line and the brow, the eye itself left clear."""
    mask = np.zeros(image.shape[:2], np.float32)
    for lid, brow, eye in zip(UPPER_LIDS, BROWS, EYES, strict=True):
        lid_points = points[list(lid)]
        brow_points = points[list(brow)]
        # Up to two thirds of the way to the brow, so the brow itself keeps its colour.
        top = lid_points + (brow_points.mean(axis=0) - lid_points.mean(axis=0)) * 0.65
        region = _polygon_mask(image.shape[:2], np.concatenate([lid_points, top[::-1]]))
        mask = np.maximum(mask, region - _polygon_mask(image.shape[:2], points[list(eye)]))
    mask = cv2.GaussianBlur(np.clip(mask, 0, 1), (0, 0), max(0.5, 0.02 * size))
    return _tint(image, mask, colour, strength)


def eyeliner(image: np.ndarray, points: np.ndarray, strength: float, size: float) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.float32)
    thickness = max(1, int(round(0.012 * size)))
    for lid in UPPER_LIDS:
        line = np.round(points[list(lid)] * 16).astype(np.int32)
        cv2.polylines(mask, [line], False, 1.0, thickness, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.004 * size))
    return _tint(image, mask, LINER_COLOUR, strength)


def blush(image: np.ndarray, points: np.ndarray, colour, strength: float, size: float) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.float32)
    radius = max(2, int(round(0.09 * size)))
    for cheek in CHEEKS:
        x, y = np.round(points[cheek]).astype(int)
        cv2.circle(mask, (int(x), int(y)), radius, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.06 * size))
    return _tint(image, mask, colour, strength)


def apply_makeup(crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random make-up look on a face crop (RGB uint8); `landmarks` the 468-point face mesh in crop pixels.

    Each of lipstick, eye shadow, eyeliner and blush is worn with its own odds, colour and strength, at least one
    of them always.
    """
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if points.shape[0] != 468 or not np.isfinite(points).all():
        raise ValueError(f"make-up needs the 468-point face mesh, got {points.shape}")
    size = _size(points)
    wears = rng.random(4) < (0.75, 0.6, 0.5, 0.4)
    if not wears.any():
        wears[rng.integers(4)] = True
    image = crop.astype(np.float32)
    if wears[0]:
        image = lipstick(image, points, LIP_COLOURS[rng.integers(len(LIP_COLOURS))], rng.uniform(0.3, 0.8), size)
    if wears[1]:
        colour = SHADOW_COLOURS[rng.integers(len(SHADOW_COLOURS))]
        image = eye_shadow(image, points, colour, rng.uniform(0.25, 0.7), size)
    if wears[2]:
        image = eyeliner(image, points, rng.uniform(0.5, 0.9), size)
    if wears[3]:
        colour = BLUSH_COLOURS[rng.integers(len(BLUSH_COLOURS))]
        image = blush(image, points, colour, rng.uniform(0.1, 0.3), size)
    return np.clip(image, 0, 255).astype(np.uint8)


def makeup_check(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """One fixed, strong look (red lips, brown lids, liner, pink cheeks) for the report's check: not a training
    draw, so the check does not simply replay an augmentation the model trained on."""
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    size = _size(points)
    image = crop.astype(np.float32)
    image = lipstick(image, points, (180, 25, 45), 0.7, size)
    image = eye_shadow(image, points, (120, 80, 70), 0.55, size)
    image = eyeliner(image, points, 0.8, size)
    image = blush(image, points, (225, 115, 115), 0.25, size)
    return np.clip(image, 0, 255).astype(np.uint8)
