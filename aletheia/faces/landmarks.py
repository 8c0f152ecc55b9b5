"""MediaPipe's face mesh (468 landmarks), reimplemented in PyTorch, and a landmarker for face crops.

The weights are MediaPipe's `face_landmark.tflite` (Apache-2.0), converted by `tools/convert_face_landmark.py` into
`aletheia/assets/landmarks/`. The network sees a 192x192 RGB face in [0, 1] and gives 468 points (x, y, z) in
those 192 input pixels (z on the scale of x, smaller towards the camera) and a face-presence logit.

Pre- and post-processing follow MediaPipe's face landmark graph: the region of interest is the face box made
square on its longer side, enlarged 1.5x around its centre and turned so the eyes lie level
(`face_detection_front_detection_to_roi`); it is cut out at 192x192 with replicated borders (ImageToTensor), and
the points are mapped back through the same rotation and scale (LandmarkProjection).

Coordinates are continuous pixels: x = 0 is the left edge of the image, the centre of pixel (i, j) is (j + 0.5,
i + 0.5), as face boxes in `aletheia.faces` are.

Points worth knowing (MediaPipe's canonical face mesh; "left"/"right" are the subject's): 33 and 133 the outer and
inner corners of the right eye, 263 and 362 those of the left eye, 1 the nose tip, 13 and 14 the inner upper and
lower lip, 61 and 291 the mouth corners, 10 the top of the forehead, 152 the chin. `FACE_OVAL` outlines the face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aletheia.faces.blazeface import pad_same as _pad_same

WEIGHTS_PATH = Path(__file__).resolve().parent.parent / "assets" / "landmarks" / "face_landmark.pth"
INPUT_SIZE = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5  # MediaPipe's RectTransformation on the detection box: square (long side), 1.5x
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263

# MediaPipe's FACEMESH_FACE_OVAL, as a closed loop of point indices (forehead, clockwise in the image).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYEBROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_EYEBROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
NOSE = (1, 2, 4, 5, 6, 19, 94, 97, 98, 168, 195, 197, 326, 327, 129, 358, 48, 278, 64, 294)


class ResidualBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, added to a shortcut, then PReLU (BlazeFace's block with PReLU).

    With stride 2 the shortcut is a 2x2 max-pool; when the block widens, the shortcut is zero-padded with the extra
    channels (TFLite's `channel_padding`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.dw = nn.Conv2d(
            in_channels, in_channels, 3, stride, padding=1 if stride == 1 else 0, groups=in_channels
        )
        self.pw = nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, h = x, self.dw(x)
        else:
            # Even sizes only (always so from 192 px): TFLite's 2x2 VALID max-pool then covers every pixel.
            shortcut, h = F.max_pool2d(x, self.stride), self.dw(_pad_same(x, 3, self.stride))
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(self.pw(h) + shortcut)


class Head(nn.Module):
    """One output branch off the 6x6 trunk: residual blocks at 128 channels (the first halves the map to 3x3),
    a 1x1 reduction to 32 channels with PReLU, one residual block at 32, and a 3x3 VALID convolution to 1x1."""

    def __init__(self, wide_blocks: int, outputs: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            ResidualBlock(128, 128, 2), *(ResidualBlock(128, 128) for _ in range(wide_blocks - 1))
        )
        self.reduce = nn.Conv2d(128, 32, 1)
        self.reduce_act = nn.PReLU(32)
        self.block = ResidualBlock(32, 32)
        self.out = nn.Conv2d(32, outputs, 3, stride=3)  # 3x3 -> 1x1, as TFLite writes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.reduce_act(self.reduce(self.blocks(x))))
        return self.out(x).flatten(1)


# (in, out, stride) of the trunk's blocks: 96x96 -> 6x6.
_TRUNK_BLOCKS = [(16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1),
                 (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1),
                 (128, 128, 1)]  # fmt: skip


class FaceMesh(nn.Module):
    """The network: N x 3 x 192 x 192 in [0, 1] -> (points [N, 468, 3] in input pixels, face logits [N])."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2)
        self.stem_act = nn.PReLU(16)
        self.trunk = nn.Sequential(*(ResidualBlock(i, o, s) for i, o, s in _TRUNK_BLOCKS))
        self.landmarks = Head(3, NUM_LANDMARKS * 3)
        self.face = Head(1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(self.stem_act(self.stem(_pad_same(x, 3, 2))))
        return self.landmarks(x).reshape(-1, NUM_LANDMARKS, 3), self.face(x)[:, 0]


@lru_cache(maxsize=1)
def _shipped_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)


def shipped_model() -> FaceMesh:
    """FaceMesh with the converted MediaPipe weights, in eval mode."""
    model = FaceMesh()
    model.load_state_dict(_shipped_state_dict())
    return model.eval()


def roi_transform(face_box: np.ndarray, angle: float = 0.0, scale: float = ROI_SCALE) -> np.ndarray:
    """The 2x3 affine taking continuous 192-px model-input coordinates to continuous image coordinates.

    The region is the box's longer side times `scale`, square, centred on the box, turned by `angle` radians
    (clockwise in the image, as y points down: the angle of the line from the right eye to the left eye).
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    side = max(x1 - x0, y1 - y0) * scale
    cos, sin = math.cos(angle) * side / INPUT_SIZE, math.sin(angle) * side / INPUT_SIZE
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    linear = np.array([[cos, -sin], [sin, cos]])
    return np.hstack([linear, (centre - linear @ [INPUT_SIZE / 2, INPUT_SIZE / 2])[:, None]])


def cut_roi(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The 192x192 model input cut from `image` through `roi_transform`'s affine, borders replicated."""
    # warpAffine works on pixel indices (centres at integers): shift in and out by half a pixel.
    index_map = transform.copy()
    index_map[:, 2] += transform[:, :2].sum(axis=1) * 0.5 - 0.5
    scale = math.hypot(*transform[0, :2])
    if scale > 1.5:  # shrinking a lot: smooth first so bilinear sampling does not alias
        image = cv2.GaussianBlur(image, (0, 0), 0.5 * scale)
    return cv2.warpAffine(
        image,
        index_map,
        (INPUT_SIZE, INPUT_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def eye_angle(points: np.ndarray) -> float:
    """The roll of a face from its landmarks: the angle of the line from the right to the left outer eye corner."""
    dx, dy = points[LEFT_EYE_OUTER, :2] - points[RIGHT_EYE_OUTER, :2]
    return math.atan2(dy, dx)


class FaceLandmarker:
    """468 face landmarks from face crops and face boxes (e.g. `FaceCropDataset.face_box`). Load once, reuse.

    The mesh is trained on level faces and under-reports a tilt it is shown: on the astronaut turned 30 degrees it
    finds 15, and its points are 12 px off (of a 98 px face box). So, as MediaPipe's tracking does from frame to
    frame, the region is turned to the eye angle found and the network run again, up to `refine` more times, for
    the faces whose angle still moved by more than `tolerance` radians. On the astronaut: upright, one pass; turned
    15 or 20 degrees, three passes, median error 0.4-0.6 px; 30 and 45 degrees, four passes, 0.3 and 0.8 px;
    60 degrees is beyond it (10 px). Start `angles` (e.g. from BlazeFace's eye keypoints) save passes.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        refine: int = 3,
        tolerance: float = 0.05,
        batch_size: int = 8,
    ) -> None:
        """`batch_size`: faces per forward pass; on a 2-core CPU, 8 ran faster per face than 1 or 48."""
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.refine = refine
        self.tolerance = tolerance
        self.model = shipped_model().to(self.device)

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs for uint8 N x 192 x 192 x 3 RGB inputs: points (N, 468, 3) in input pixels and
        face-presence probabilities (N,)."""
        if inputs.dtype != np.uint8 or inputs.ndim != 4 or inputs.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(
                f"expected uint8 N x {INPUT_SIZE} x {INPUT_SIZE} x 3, got {inputs.dtype} {inputs.shape}"
            )
        if len(inputs) == 0:
            return np.zeros((0, NUM_LANDMARKS, 3), np.float32), np.zeros(0, np.float32)
        points, scores = [], []
        with torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                chunk = torch.from_numpy(inputs[start : start + self.batch_size]).to(self.device)
                p, logits = self.model(chunk.permute(0, 3, 1, 2).float() / 255.0)
                points.append(p.cpu().numpy())
                scores.append(torch.sigmoid(logits).cpu().numpy())
        return np.concatenate(points), np.concatenate(scores)

    def _pass(
        self, crops: Sequence[np.ndarray], boxes: Sequence[np.ndarray], angles: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        transforms = [roi_transform(box, angle) for box, angle in zip(boxes, angles, strict=True)]
        inputs = np.stack([cut_roi(crop, t) for crop, t in zip(crops, transforms, strict=True)])
        points, scores = self.run(inputs)
        out = points.astype(np.float64)
        for i, t in enumerate(transforms):
            out[i, :, :2] = points[i, :, :2] @ t[:, :2].T + t[:, 2]
            out[i, :, 2] = points[i, :, 2] * math.hypot(*t[0, :2])  # z on the scale of x, in image pixels
        return out, scores

    def detect_batch(
        self,
        crops: Sequence[np.ndarray],
        face_boxes: Sequence[np.ndarray],
        angles: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points (N, 468, 3) in each crop's pixels (z in pixels too) and face-presence scores (N,) in [0, 1].

        `crops` are RGB uint8 images of any size (they may differ); `face_boxes` (x0, y0, x1, y1) the face in each;
        `angles` optional start rolls in radians (clockwise on screen, `eye_angle`'s convention), else 0.
        A score below about 0.5 says the region held no face the mesh could fit: its points are not to be trusted.
        """
        if len(crops) != len(face_boxes):
            raise ValueError(f"{len(crops)} crops but {len(face_boxes)} face boxes")
        for crop in crops:
            if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
                raise ValueError(f"expected RGB uint8 H x W x 3 crops, got {crop.dtype} {crop.shape}")
        if len(crops) == 0:
            return np.zeros((0, NUM_LANDMARKS, 3), np.float64), np.zeros(0, np.float32)
        angles = np.zeros(len(crops)) if angles is None else np.asarray(angles, dtype=np.float64)
        points, scores = self._pass(crops, face_boxes, angles)
        todo = np.arange(len(crops))
        for _ in range(self.refine):
            found = np.array([eye_angle(points[i]) for i in todo])
            moved = np.abs(np.angle(np.exp(1j * (found - angles[todo])))) > self.tolerance
            todo = todo[moved]
            angles[todo] = found[moved]
            if len(todo) == 0:
                break
            points[todo], scores[todo] = self._pass(
                [crops[i] for i in todo], [face_boxes[i] for i in todo], angles[todo]
            )
        return points, scores

    def detect(
        self, crop: np.ndarray, face_box: np.ndarray, angle: float | None = None
    ) -> tuple[np.ndarray, float]:
        """`detect_batch` for one crop: points (468, 3) and the face-presence score."""
        points, scores = self.detect_batch([crop], [face_box], None if angle is None else [angle])
        return points[0], float(scores[0])

    def landmarks(self, crop: np.ndarray, face_box: np.ndarray) -> np.ndarray:
        """(468, 2) float64 x, y of the face mesh in crop pixels."""
        return self.detect(crop, face_box)[0][:, :2]

    def landmarks_batch(self, crops: Sequence[np.ndarray], face_boxes: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 468, 2) float64 x, y per crop."""
        return self.detect_batch(crops, face_boxes)[0][..., :2]
