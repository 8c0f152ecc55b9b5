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


# Landmark groups of MediaPipe's 468-point face mesh (see aletheia.faces.landmarks) that the hull masks use.
# Defined here as plain indices so this module stays free of torch.
_MESH_POINTS = 468
_FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
              176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
_LOWER_OVAL = _FACE_OVAL[8:29]  # left cheek (454) round the chin (152) to the right cheek (234)
_BROWS_EYES = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336,
               33, 133, 159, 145, 263, 362, 386, 374)  # fmt: skip
_NOSE = (1, 2, 4, 5, 6, 19, 94, 97, 98, 168, 195, 197, 326, 327, 129, 358, 48, 278, 64, 294)
_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
_AROUND_MOUTH = (57, 287, 83, 18, 313)  # just beyond the mouth corners and below the lower lip
HULL_REGIONS: dict[str, tuple[int, ...] | None] = {
    # Every point: forehead to chin, cheek to cheek (a full swap).
    "face": None,
    # Brows, eyes, nose and mouth (what most swaps paste).
    "inner": _BROWS_EYES + _NOSE + _LIPS + _AROUND_MOUTH,
    # Nose, mouth, cheeks and jaw (mouth reenactment).
    "lower": _LOWER_OVAL + _NOSE + _LIPS,
}
_REGION_ODDS = {"face": 0.5, "inner": 0.3, "lower": 0.2}
# The inner region's hull runs along the brows, the eye corners and the mouth corners; grown a little about its
# centre it keeps most of the eyes and mouth under the mask through erosion and feathering.
_REGION_GROWTH = {"face": 1.0, "inner": 1.12, "lower": 1.0}
# SBI's blend ratios: a faint blend as often as not, a full one half the time.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


def _smooth_field(
    shape: tuple[int, int], cells: int, amplitude: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (dx, dy) over `shape`, varying over about `cells` per side."""
    h, w = shape
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells, 2)).astype(np.float32)
    # Cubic interpolation can overshoot the grid a little: clip, so no pixel moves further than `amplitude`.
    flow = np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), -amplitude, amplitude)
    return flow[..., 0], flow[..., 1]


def landmark_hull_mask(
    shape: tuple[int, int],
    landmarks: np.ndarray,
    rng: np.random.Generator,
    region: str | None = None,
    blend_ratio: float | None = None,
) -> np.ndarray:
    """A soft blending mask (H x W float32 in [0, 1]) from facial landmarks, as Self-Blended Images makes its masks.

    The convex hull of a set of landmarks (`region`: "face" - all of them -, "inner" - brows, eyes, nose and mouth -
    grown by 12%, or "lower" - nose, mouth, cheeks and jaw; None picks one at random, mostly "face") is filled, its corners
    jittered, the outline bent by a smooth random elastic field, grown or shrunk by a random erosion or dilation,
    feathered with a Gaussian of random width, and scaled by a blend ratio (`blend_ratio`, or one drawn from
    BLEND_RATIOS). `landmarks` are (N, 2+) points in pixels of the image the mask is for: MediaPipe's 468-point
    mesh (aletheia.faces.landmarks) for the regions, or any N >= 3 points, of which the hull is taken whole.

    Every random change scales with the face (`size`, the square root of the hull points' bounding-box area), so
    masks look alike at any crop size. The mask is exactly 0 further than 0.4 `size` from the hull (corner jitter
    0.03, elastic field 0.05, dilation 0.08, feathering 4 sigma <= 0.24), so the background there stays as it was.
    """
    h, w = shape
    points = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if len(points) < 3 or not np.isfinite(points).all():
        raise ValueError(f"need at least 3 finite landmarks, got {points.shape}")
    if region is None:
        region = "face"
        if len(points) == _MESH_POINTS:
            names = list(_REGION_ODDS)
            region = names[rng.choice(len(names), p=list(_REGION_ODDS.values()))]
    if region not in HULL_REGIONS:
        raise ValueError(f"unknown hull region {region!r}; choose one of {', '.join(HULL_REGIONS)}")
    indices = HULL_REGIONS[region]
    if indices is not None:
        if len(points) != _MESH_POINTS:
            raise ValueError(
                f"region {region!r} needs the {_MESH_POINTS}-point face mesh, got {len(points)} points"
            )
        points = points[list(indices)]
    extent = points.max(axis=0) - points.min(axis=0)
    size = float(np.sqrt(max(extent[0], 1.0) * max(extent[1], 1.0)))

    # 1. The hull, its corners moved a little each (the outline of a landmark fit is never exact).
    hull = cv2.convexHull(points.astype(np.float32))[:, 0].astype(np.float64)
    centre = hull.mean(axis=0)
    hull = centre + (hull - centre) * _REGION_GROWTH[region]
    hull += rng.uniform(-1.0, 1.0, size=hull.shape) * rng.uniform(0.0, 0.03) * size
    # fillPoly counts from pixel centres, landmarks from pixel edges; 4 fractional bits keep sub-pixel vertices.
    polygon = [np.round((hull - 0.5) * 16).astype(np.int32)]
    mask = np.zeros((h, w), dtype=np.float32)
    cv2.fillPoly(mask, polygon, 1.0, lineType=cv2.LINE_8, shift=4)

    # 2. Elastic deformation: a smooth random field bends the outline, a few percent of the face.
    if rng.random() < 0.8:
        cells = int(rng.integers(3, 7))
        dx, dy = _smooth_field((h, w), cells, rng.uniform(0.01, 0.05) * size, rng)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mask = cv2.remap(
            mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )

    # 3. Erosion or dilation by up to ~8% of the face (the blend boundary moves in or out of the hull).
    choice = rng.random()
    radius = int(round(rng.uniform(0.01, 0.08) * size))
    if choice < 0.7 and radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.erode(mask, kernel) if choice < 0.35 else cv2.dilate(mask, kernel)
        if mask.max() <= 0:  # eroded away (a tiny face): fall back to the plain hull
            cv2.fillPoly(mask, polygon, 1.0, lineType=cv2.LINE_8, shift=4)

    # 4. Feathering: a Gaussian of random width; sometimes the blurred edge is first pulled inside the hull
    #    (blur, keep only the fully covered part, blur again), so the blend fades out before the outline.
    sigma = max(0.5, rng.uniform(0.01, 0.06) * size)
    if rng.random() < 0.5:
        inner = cv2.GaussianBlur(mask, (0, 0), max(0.5, rng.uniform(0.01, 0.03) * size))
        inner = (inner >= 0.999).astype(np.float32)
        if inner.max() > 0:
            mask = inner
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    top = float(mask.max())
    if top > 0:
        mask /= top  # a narrow region blurred wide keeps a full-strength centre
    ratio = float(rng.choice(BLEND_RATIOS)) if blend_ratio is None else float(blend_ratio)
    return np.clip(mask * ratio, 0.0, 1.0).astype(np.float32)


def self_blend_with_landmarks(
    crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, region: str | None = None
) -> np.ndarray:
    """`self_blend` with SBI's landmark-hull mask instead of the ellipse from the box.

    `crop` is RGB uint8; `landmarks` the face mesh in crop pixels (`FaceLandmarker.landmarks`). The altered copy is
    made exactly as `self_blend` makes it (colour, sharpness, then scale and shift).
    """
    source = _jitter_geometry(_jitter_sharpness(_jitter_colour(crop, rng), rng), rng)
    mask = landmark_hull_mask(crop.shape[:2], landmarks, rng, region=region)[..., None]
    return np.clip(source * mask + crop * (1.0 - mask), 0, 255).astype(np.uint8)
