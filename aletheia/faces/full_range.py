"""BlazeFace full range: MediaPipe's 192x192 face detector for faces farther from the camera, in PyTorch.

The weights are MediaPipe's `face_detection_full_range.tflite` (Apache-2.0), converted by
`tools/convert_blazeface.py --full-range` into `aletheia/assets/blazeface/`. Unlike the short-range model it has
one output map at stride 4 (one anchor per cell), fed by a small feature pyramid (bilinear 2x upsampling, as
TFLite's RESIZE_BILINEAR with half-pixel centres), so it sees faces down to a few pixels. Its outputs decode with
the same anchors, decoding and weighted NMS as the short-range model (aletheia.faces.blazeface).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aletheia.faces.blazeface import pad_same
from aletheia.faces.detections import FULL_RANGE_INPUT_SIZE as INPUT_SIZE
from aletheia.faces.detections import FULL_RANGE_SIZE_MULTIPLE as SIZE_MULTIPLE
from aletheia.faces.detections import FULL_RANGE_STRIDE as STRIDE  # one anchor per cell of the stride-4 map
from aletheia.faces.detections import FULL_RANGE_WEIGHTS as WEIGHTS_PATH

__all__ = ["INPUT_SIZE", "SIZE_MULTIPLE", "STRIDE", "WEIGHTS_PATH", "BlazeFaceFullRange"]


class BottleneckBlock(nn.Module):
    """Depthwise 3x3, pointwise down to `mid` channels, ReLU, depthwise 3x3, pointwise up; shortcut; ReLU.

    The shortcut is as in the short-range BlazeBlock: a 2x2 max-pool when striding, zero channels when widening.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.dw1 = nn.Conv2d(
            in_channels, in_channels, 3, stride, padding=1 if stride == 1 else 0, groups=in_channels
        )
        self.pw1 = nn.Conv2d(in_channels, mid_channels, 1)
        self.dw2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, groups=mid_channels)
        self.pw2 = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, h = x, self.dw1(x)
        else:
            shortcut, h = F.max_pool2d(x, self.stride), self.dw1(pad_same(x, 3, self.stride))
        h = self.pw2(self.dw2(F.relu(self.pw1(h))))
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(h + shortcut)


def _blocks(specs: list[tuple[int, int, int, int]]) -> nn.Sequential:
    return nn.Sequential(*(BottleneckBlock(*spec) for spec in specs))


# (in, mid, out, stride) per block, grouped by the stride of their output relative to the input.
_BACKBONE = {
    "stage2": [(32, 8, 32, 1)] * 2,
    "stage4": [(32, 12, 48, 2), (48, 12, 48, 1), (48, 16, 64, 1)],
    "stage8": [(64, 24, 96, 2), (96, 32, 128, 1), (128, 32, 128, 1)],
    "stage16": [(128, 36, 144, 2), (144, 48, 192, 1), (192, 64, 256, 1)],
    "stage32": [(256, 96, 384, 2)] + [(384, 96, 384, 1)] * 3,
}


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class BlazeFaceFullRange(nn.Module):
    """N x 3 x H x W in [-1, 1] (H, W multiples of 32; 192 as trained) -> (regressors [N, H*W/16, 16],
    classificators [N, H*W/16, 1]), anchors row-major over the stride-4 map as TFLite orders them."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2)
        for name, specs in _BACKBONE.items():
            setattr(self, name, _blocks(specs))
        # Top-down pyramid: each coarser map, reduced and upsampled, is added to a lateral 1x1 of the finer one.
        self.lateral32 = nn.Conv2d(384, 96, 1)
        self.lateral16 = nn.Conv2d(256, 96, 1)
        self.refine16 = _blocks([(96, 48, 96, 1)] * 2)
        self.reduce16 = nn.Conv2d(96, 64, 1)
        self.lateral8 = nn.Conv2d(128, 64, 1)
        self.refine8 = _blocks([(64, 32, 64, 1)] * 2)
        self.reduce8 = nn.Conv2d(64, 48, 1)
        self.lateral4 = nn.Conv2d(64, 48, 1)
        self.refine4 = _blocks([(48, 24, 48, 1)])
        self.classifier = nn.Conv2d(48, 1, 1)
        self.regressor = nn.Conv2d(48, 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stage2(F.relu(self.stem(pad_same(x, 3, 2))))
        c4 = self.stage4(x)
        c8 = self.stage8(c4)
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p16 = self.refine16(_upsample(F.relu(self.lateral32(c32))) + F.relu(self.lateral16(c16)))
        p8 = self.refine8(_upsample(F.relu(self.reduce16(p16))) + F.relu(self.lateral8(c8)))
        p4 = self.refine4(_upsample(F.relu(self.reduce8(p8))) + F.relu(self.lateral4(c4)))
        n = x.shape[0]
        regressors = self.regressor(p4).permute(0, 2, 3, 1).reshape(n, -1, 16)
        classificators = self.classifier(p4).permute(0, 2, 3, 1).reshape(n, -1, 1)
        return regressors, classificators
