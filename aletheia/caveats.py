"""Warnings where the model is known to be weak (its card's "Known failure modes"), per face and per input.

Each warning is a short stable code for programs and a sentence for people. What can be told cheaply from the
pixels is: a small face, a blurred face crop, a face cut by the frame edge, a close-up portrait (polished and
beauty-filtered portraits read as fake to this model; whether one *is* polished cannot be told reliably, so every
close-up portrait carries the warning), a heavily compressed JPEG, a small image, and, for videos, a person whose
frames disagree. Two more say how far to trust the verdict's rules: a score that moved between the mirrored views,
and a model whose inconclusive band was not chosen on its validation data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# A face whose box is shorter than this (pixels, original image) is upscaled several times into the 224-px crop.
SMALL_FACE_PX = 64
# Variance of the Laplacian of the grey 224-px crop below which it is blurred: about the 2nd percentile (6.4) of 396
# development-data faces from every source, each resized to 224 px (the median is 47; 30% are under 20).
BLUR_VARIANCE = 6.0
# The face box's area over the image's at or above which the photo is a close-up portrait.
PORTRAIT_AREA = 0.12
# JPEG quality below which compression is heavy: training re-encoded faces at quality 60-95.
LOW_JPEG_QUALITY = 60
# An image whose shorter side is below this holds little detail for any face in it.
SMALL_IMAGE_PX = 200
# A person (video track) of whose faces at least this share fall on the other side of the threshold from the
# person's score is inconclusive: a single score would hide that the frames disagree.
DISAGREE_SHARE = 0.25
# How close (pixels) a box may come to the border and still count as touching it.
EDGE_PX = 2.0

MODEL_CARD_NOTE = "see the model card's known failure modes"


@dataclass(frozen=True)
class Caveat:
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def face_caveats(
    box: np.ndarray, crop: np.ndarray | None, width: int, height: int, whole_image: bool = False
) -> list[Caveat]:
    """The warnings of one detected face in an image (or frame) of width x height pixels. `whole_image`: the image
    is itself a face crop (--assume-face), so its edges and its framing say nothing."""
    out: list[Caveat] = []
    x0, y0, x1, y1 = (float(v) for v in box)
    side = min(x1 - x0, y1 - y0)
    if side < SMALL_FACE_PX:
        out.append(Caveat("small_face", f"The face is only {side:.0f} px across (under {SMALL_FACE_PX}): small "
                                        f"faces are scored less reliably ({MODEL_CARD_NOTE})."))  # fmt: skip
    if crop is not None and (sharpness := laplacian_variance(crop)) < BLUR_VARIANCE:
        out.append(Caveat("blurred_face", f"The face is blurred (sharpness {sharpness:.1f}, under {BLUR_VARIANCE:.0f}"
                                          "): low-quality faces are scored less reliably."))  # fmt: skip
    if whole_image:
        return out
    if x0 <= EDGE_PX or y0 <= EDGE_PX or x1 >= width - EDGE_PX or y1 >= height - EDGE_PX:
        out.append(Caveat("face_at_edge", "The face is cut by the edge of the picture: part of what the model "
                                          "looks at is missing."))  # fmt: skip
    if (x1 - x0) * (y1 - y0) >= PORTRAIT_AREA * width * height:
        out.append(Caveat("portrait", "A close-up portrait: polished, retouched or beauty-filtered portraits often "
                                      "read as fake to this model. Do not act on a flag without checking "
                                      f"({MODEL_CARD_NOTE})."))  # fmt: skip
    return out


def unstable_caveat(spread: float, limit: float) -> Caveat:
    return Caveat("unstable_score", f"The score moved by {spread:.2f} between the original and the mirrored face "
                                    f"(over {limit:.2f}), so it cannot be relied on: the face is inconclusive.")  # fmt: skip


def image_caveats(width: int | None, height: int | None, jpeg_quality: int | None) -> list[Caveat]:
    """The warnings of a whole image: heavy JPEG compression, small size."""
    out: list[Caveat] = []
    if jpeg_quality is not None and jpeg_quality < LOW_JPEG_QUALITY:
        out.append(Caveat("heavy_compression", f"The JPEG was saved at quality about {jpeg_quality} (under "
                                               f"{LOW_JPEG_QUALITY}): heavy compression hides or imitates the traces "
                                               "the model looks for."))  # fmt: skip
    if width and height and min(width, height) < SMALL_IMAGE_PX:
        out.append(Caveat("small_image", f"The image is only {width}x{height} px: small, low-quality images are "
                                         f"scored less reliably ({MODEL_CARD_NOTE})."))  # fmt: skip
    return out


def rule_caveats(default_band: bool, tta: str, video: bool = False) -> list[Caveat]:
    """Warnings about the verdict's own rules for this model and these settings. A video's faces unaugmented are
    no warning: its people's scores are checked for stability across their frames instead (disagree_caveat)."""
    out: list[Caveat] = []
    if default_band:
        out.append(Caveat("default_band", "This model carries no inconclusive band chosen on its validation data; "
                                          "a default band around its threshold is used."))  # fmt: skip
    if tta == "none" and not video:
        out.append(Caveat("no_augmentation", "Scores were not checked for stability (test-time augmentation off): "
                                             "an unstable score cannot be told."))  # fmt: skip
    return out


def disagree_caveat(other_side: int, total: int) -> Caveat:
    return Caveat("frames_disagree", f"{other_side} of this person's {total} faces score on the other side of the "
                                     "threshold from their overall score: the frames disagree, the person is "
                                     "inconclusive.")  # fmt: skip


def laplacian_variance(crop: np.ndarray) -> float:
    """Sharpness of an RGB uint8 crop: the variance of its grey Laplacian (low = blurred)."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def caveats_json(caveats: list[Caveat]) -> list[dict[str, Any]]:
    return [c.to_json() for c in caveats]
