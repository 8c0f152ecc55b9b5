"""BlazeFace short range: MediaPipe's 128x128 face detector, reimplemented in PyTorch.

The weights are MediaPipe's `face_detection_short_range.tflite` (Apache-2.0), converted by
`tools/convert_blazeface.py` into `aletheia/assets/blazeface/`. Post-processing follows MediaPipe's face detection
graph (aletheia.faces.detections, which needs no torch).

Detections are float32 rows of 17 values: x0, y0, x1, y1, six keypoints (x, y) - right eye, left eye, nose tip,
mouth centre, right ear tragion, left ear tragion - and the score. Coordinates are fractions of the input side;
a face cut by the border may reach slightly outside [0, 1] (MediaPipe does not clip either).

The network is fully convolutional: fed a larger image (sides multiples of 16) it yields the same outputs on a
larger anchor grid, which is how aletheia.faces.extract runs it over whole photos. aletheia.faces.networks runs it
on torch or, from the shipped ONNX file, on ONNX Runtime.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Decoding needs no torch and lives in aletheia.faces.detections; re-exported here for the network's users.
from aletheia.faces.detections import (  # noqa: F401
    NUM_KEYPOINTS,
    decode,
    generate_anchors,
    iou,
    postprocess,
    weighted_nms,
)
from aletheia.faces.detections import SHORT_RANGE_ANCHOR_LAYOUT as ANCHOR_LAYOUT
from aletheia.faces.detections import SHORT_RANGE_INPUT_SIZE as INPUT_SIZE
from aletheia.faces.detections import SHORT_RANGE_NUM_ANCHORS as NUM_ANCHORS
from aletheia.faces.detections import SHORT_RANGE_WEIGHTS as WEIGHTS_PATH

__all__ = ["ANCHOR_LAYOUT", "INPUT_SIZE", "NUM_ANCHORS", "NUM_KEYPOINTS", "WEIGHTS_PATH", "BlazeFace", "decode",
           "generate_anchors", "iou", "pad_same", "postprocess", "weighted_nms"]  # fmt: skip


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad like TFLite 'SAME' for sizes divisible by `stride` (all the detectors are fed): any odd pixel goes to
    the bottom/right, whereas PyTorch pads symmetrically. Constant for such sizes, so one ONNX export fits all."""
    total = max(kernel - stride, 0)
    return F.pad(x, [total // 2, total - total // 2] * 2)


class BlazeBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, added to a shortcut, then ReLU.

    With stride 2 the shortcut is a 2x2 max-pool; when the block widens, the shortcut is zero-padded with the extra
    channels (TFLite's `channel_padding`), so it costs no weights.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.dw = nn.Conv2d(
            in_channels, in_channels, 3, stride, padding=1 if stride == 1 else 0, groups=in_channels
        )
        self.pw = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, h = x, self.dw(x)
        else:
            # Even input sizes only (always so at 128 px): TFLite's SAME max-pool then needs no padding.
            shortcut, h = F.max_pool2d(x, self.stride), self.dw(pad_same(x, 3, self.stride))
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(self.pw(h) + shortcut)


# (in, out, stride) of each block; the heads look at the outputs of both groups.
_STRIDE8_BLOCKS = [(24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
                   (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1)]  # fmt: skip
_STRIDE16_BLOCKS = [(88, 96, 2)] + [(96, 96, 1)] * 4


class BlazeFace(nn.Module):
    """The short-range network: N x 3 x 128 x 128 in [-1, 1] -> raw (regressors [N,896,16], classificators [N,896,1]).

    Anchor order matches TFLite: the 16x16 map (2 anchors per cell) first, then the 8x8 map (6 per cell), each
    row-major with the anchors of one cell adjacent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, stride=2)
        self.stride8 = nn.Sequential(*(BlazeBlock(i, o, s) for i, o, s in _STRIDE8_BLOCKS))
        self.stride16 = nn.Sequential(*(BlazeBlock(i, o, s) for i, o, s in _STRIDE16_BLOCKS))
        self.classifier8 = nn.Conv2d(88, 2, 1)
        self.regressor8 = nn.Conv2d(88, 2 * 16, 1)
        self.classifier16 = nn.Conv2d(96, 6, 1)
        self.regressor16 = nn.Conv2d(96, 6 * 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(pad_same(x, 5, 2)))
        f8 = self.stride8(x)
        f16 = self.stride16(f8)

        def flat(t: torch.Tensor, values: int) -> torch.Tensor:
            """NCHW -> N x (H*W*anchors) x values, in TFLite's (NHWC) order."""
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, values)

        regressors = torch.cat([flat(self.regressor8(f8), 16), flat(self.regressor16(f16), 16)], dim=1)
        classificators = torch.cat([flat(self.classifier8(f8), 1), flat(self.classifier16(f16), 1)], dim=1)
        return regressors, classificators
