"""Pixels for the web app: the photo with each face boxed and scored, attention maps blended onto face crops, and a
video's timeline of fake probability per person.

Pure functions of arrays and results, so they are tested without a server.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aletheia.results import ImageResult
from aletheia.video import VideoResult, plot_timeline

FAKE_COLOUR = (214, 39, 40)
REAL_COLOUR = (44, 160, 44)
INCONCLUSIVE_COLOUR = (191, 120, 0)
COLOURS = {"fake": FAKE_COLOUR, "real": REAL_COLOUR, "inconclusive": INCONCLUSIVE_COLOUR}
# Large enough for a photo on a screen, small enough that encoding and sending it stays quick.
DISPLAY_MAX_SIDE = 1600


def shrink_for_display(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The image scaled down so its longer side is at most `max_side` (returned as is when already small)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def draw_faces(image: np.ndarray, result: ImageResult, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """A copy of the RGB image, shrunk to `max_side`, with each face boxed and labelled "#n 0.123 fake".

    `image` may already be a shrunk copy of the analysed photo: boxes are scaled from the result's own width.
    Colours follow each face's verdict at the result's threshold: red fake, green real, amber inconclusive.
    """
    canvas = Image.fromarray(shrink_for_display(image, max_side))
    scale = canvas.size[0] / (result.width or image.shape[1])
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(max(canvas.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 30)))
    for number, face in enumerate(result.faces, start=1):
        label = result.face_label(face)
        colour = COLOURS[label]
        x0, y0, x1, y1 = (float(v) * scale for v in face.box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        text = f"#{number} {face.score:.3f} {label}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = line
        text_w, text_h = right - left + 2 * pad, bottom - top + 2 * pad
        # Above the box when there is room, else just inside its top edge.
        ty = y0 - text_h if y0 - text_h >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, canvas.size[0] - text_w))
        draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        draw.text((tx + pad - left, ty + pad - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def attention_overlay(crop: np.ndarray, attention: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The attention map (h x w, 0..1) resized onto the RGB crop, coloured with a perceptual map and blended.

    The map is shown on its absolute 0..1 scale, not stretched to its own range: stretching would turn a nearly
    flat map into a confident-looking pattern.
    """
    size = (crop.shape[1], crop.shape[0])
    values = cv2.resize(np.asarray(attention, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
    levels = np.clip(values * 255.0, 0, 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * crop.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


def timeline_image(result: VideoResult) -> np.ndarray:
    """The video's timeline plot (`aletheia.video.plot_timeline`: a line per person, the threshold dashed) as RGB.

    Drawn in a temporary folder of its own that is gone on return: concurrent sessions never share a file.
    """
    with tempfile.TemporaryDirectory(prefix="aletheia-timeline-") as folder:
        path = plot_timeline(result, Path(folder) / "timeline.png")
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
