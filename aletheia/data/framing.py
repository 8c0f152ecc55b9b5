"""Face framing equalised across sources: a training crop zoomed in or out so the face fills a random share of it.

Why: how much of a crop the face fills differs by source, not by class. FF++ and UTKFace images are already tight
face crops, so their faces fill about 0.92 of the width of the training crop; FFHQ, StyleGAN3, InSwapper, the Human
Faces portraits and every whole photo the pipeline crops fill about 0.63. So every FF++ fake the model learns from
is framed as no face in a photo is at inference, and the model's verdicts hang on the framing: zooming the loose
held-out faces to FF++'s framing took v8's InSwapper AUC from 0.907 to 0.661 and its StyleGAN3 AUC from 0.635 to
0.543. Re-framing a share of every source's crops, real and fake alike, makes framing no sign of either class.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SHARES = (0.6, 0.95)  # face width over crop width, drawn uniformly: the loose and tight framings of the data
ZOOM_LIMITS = (0.7, 1.6)  # zooming out past 0.7 would fill too much of the crop with reflected border


def zoom_about_face(crop: np.ndarray, face_box: np.ndarray, zoom: float) -> np.ndarray:
    """The crop scaled by `zoom` about the face's centre (`face_box` in crop pixels), same size; zooming out
    reflects the border, as crop jitter does."""
    x0, y0, x1, y1 = face_box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.float32([[zoom, 0, cx * (1 - zoom)], [0, zoom, cy * (1 - zoom)]])
    return cv2.warpAffine(
        crop, matrix, (crop.shape[1], crop.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def reframe(crop: np.ndarray, face_box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop (RGB uint8, square) zoomed about the face so the face fills a random share of its width;
    `face_box` is the face in crop pixels (`box_in_crop`)."""
    share = (face_box[2] - face_box[0]) / crop.shape[1]
    zoom = float(np.clip(rng.uniform(*FACE_SHARES) / max(share, 1e-3), *ZOOM_LIMITS))
    return zoom_about_face(crop, face_box, zoom)
