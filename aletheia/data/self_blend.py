"""Self-blended pseudo-fakes (after Shiohara & Yamasaki, CVPR 2022), made on the fly from real face crops.

A real face is blended with a slightly altered copy of itself (colour, sharpness, scale, position) under a soft mask
over the face. The result holds only the traces every face swap leaves (a blending boundary, colour and sharpness
mismatch, a small misalignment) and no generator's fingerprint, so a detector trained on it learns blending
artefacts that transfer to manipulation methods it never saw.
"""

from __future__ import annotations

import cv2
import numpy as np


def _jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    out = out * rng.uniform(0.9, 1.1) + rng.uniform(-15, 15)  # contrast, brightness
    out += rng.uniform(-12, 12, size=3)  # per-channel shift: a skin-tone mismatch
    return np.clip(out, 0, 255).astype(np.uint8)


def _jitter_geometry(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    scale = rng.uniform(0.95, 1.05)
    shift_x, shift_y = rng.uniform(-0.03, 0.03, size=2) * (w, h)
    matrix = np.array([[scale, 0, (1 - scale) * w / 2 + shift_x], [0, scale, (1 - scale) * h / 2 + shift_y]])
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


def _jitter_sharpness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        h, w = image.shape[:2]
        factor = rng.uniform(0.4, 0.8)
        small = cv2.resize(
            image, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA
        )
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(image, (0, 0), 1.0)
    return cv2.addWeighted(image, 1.6, blurred, -0.6, 0)  # sharpened


def blend_mask(shape: tuple[int, int], face_box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft elliptical mask over the inner face (eyes to chin), randomly sized, shifted, deformed and feathered."""
    h, w = shape
    x0, y0, x1, y1 = face_box
    centre = (
        (x0 + x1) / 2 + rng.uniform(-0.05, 0.05) * (x1 - x0),
        (y0 + y1) / 2 + rng.uniform(0.0, 0.1) * (y1 - y0),
    )
    axes = ((x1 - x0) / 2 * rng.uniform(0.7, 1.0), (y1 - y0) / 2 * rng.uniform(0.75, 1.05))
    mask = np.zeros((h, w), dtype=np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (max(2, int(axes[0])), max(2, int(axes[1]))),
                rng.uniform(-10, 10), 0, 360, 1.0, -1)  # fmt: skip
    # Deform the outline a little (a landmark hull is never an ellipse), then feather it by a random amount.
    grid = rng.uniform(-1, 1, size=(4, 4, 2)).astype(np.float32) * 0.04 * min(h, w)
    flow = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mask = cv2.remap(mask, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    sigma = rng.uniform(0.02, 0.08) * (x1 - x0)
    return np.clip(cv2.GaussianBlur(mask, (0, 0), max(0.5, sigma)), 0.0, 1.0)


def self_blend(crop: np.ndarray, face_box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pseudo-fake from one real crop (RGB uint8); `face_box` is the face in crop pixels (`box_in_crop`)."""
    source = _jitter_geometry(_jitter_sharpness(_jitter_colour(crop, rng), rng), rng)
    mask = blend_mask(crop.shape[:2], face_box, rng) * rng.choice([0.5, 0.75, 1.0, 1.0, 1.0])
    mask = mask[..., None]
    return np.clip(source * mask + crop * (1.0 - mask), 0, 255).astype(np.uint8)
