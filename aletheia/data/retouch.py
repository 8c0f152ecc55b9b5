"""A beauty filter on the face only, for real and fake training faces alike.

Why: self-blended pseudo-fakes teach that a face smoother than its surroundings was pasted in, and a real face
retouched by an app or by studio make-up is exactly that. Smoothing the skin of every validation real face raised
the shipped v5 model's share flagged from 4.8% to 25.4% (`beauty_filter` in benchmarks/default_model_report.py).
Giving the filter to a share of every class's training faces makes a smooth face no sign of either class, so the
model has to rely on the traces a blend leaves that a beauty filter does not (colour mismatch, misalignment, the
boundary itself). The trade-off, measured in stage 2 at 0.3: 25.4% -> 12.2%, but 0.02-0.03 less like-for-like AUC
on FF++ Deepfakes and Face2Face, whose blends are smooth too (see the model card).
"""

from __future__ import annotations

import cv2
import numpy as np

from aletheia.data.self_blend import blend_mask


def retouch_face(crop: np.ndarray, face_box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Edge-preserving smoothing of a random strength inside a soft mask over the face (RGB uint8 crop).

    `face_box` is the face in crop pixels (`box_in_crop`). Skin flattens; eyes, brows and outlines keep their
    edges (a bilateral filter), and everything outside the mask is untouched.
    """
    sigma = float(rng.uniform(30.0, 100.0))
    smooth = cv2.bilateralFilter(crop, d=9, sigmaColor=sigma, sigmaSpace=3.0 + sigma / 10.0)
    mask = blend_mask(crop.shape[:2], face_box, rng) * rng.uniform(0.6, 1.0)
    mask = mask[..., None]
    return np.clip(smooth * mask + crop * (1.0 - mask), 0, 255).astype(np.uint8)
