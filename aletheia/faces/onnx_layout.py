"""The BlazeFace networks rearranged for ONNX Runtime's CPU kernels before export: same outputs, faster to run.

ONNX Runtime runs convolutions fastest in its blocked layout (NCHWc, 16 channels a block with AVX-512), where it also
fuses a following Add and ReLU into the convolution. Three things in the networks as converted from TFLite break that
chain, each costing a layout conversion back and forth: channel counts that are not multiples of the block (24, 28,
36, 42...), the zero channels padded onto a widening block's shortcut (a Pad over channels) and TFLite's asymmetric
SAME padding before strided convolutions (a separate Pad). Here

* every channel count is rounded up to a multiple of 16 with zero weights (the added channels stay exactly zero:
  zero weights, zero bias, ReLU of zero), so ORT computes what it would have padded internally anyway;
* a widening block's output `relu(pw(h) + pad(shortcut))` is computed as
  `concat(relu(pw_first(h) + shortcut), relu(pw_rest(h)))`: the same sums, both halves fused convolutions;
* after export (`fold_pads`), each spatial Pad is folded into the padding of the convolution it feeds (ONNX allows
  asymmetric padding, PyTorch does not).

Outputs agree with the original networks to float rounding (tests/faces/test_blazeface.py compares the shipped ONNX
files with torch). Measured on a 1080p photo's largest levels (one thread, loaded 2-core EPYC): short range 1.6x,
full range 1.16x faster. Imported only by the export (needs torch).
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from aletheia.faces.blazeface import BlazeBlock, pad_same
from aletheia.faces.full_range import BottleneckBlock

BLOCK = 16  # ORT's NCHWc block with AVX-512 (8 with AVX2: multiples of 16 are multiples of 8 too)


def _rounded(channels: int) -> int:
    return -(-channels // BLOCK) * BLOCK


def _widened_conv(conv: nn.Conv2d, pad_in: bool = True, pad_out: bool = True) -> nn.Conv2d:
    """`conv` with its channels rounded up (inputs and/or outputs), the new weights and biases zero."""
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    cin = _rounded(conv.in_channels) if pad_in or depthwise else conv.in_channels
    cout = _rounded(conv.out_channels) if pad_out or depthwise else conv.out_channels
    wide = nn.Conv2d(cin, cout, conv.kernel_size, conv.stride, conv.padding, groups=cin if depthwise else 1)
    with torch.no_grad():
        wide.weight.zero_()
        wide.bias.zero_()
        wide.weight[: conv.out_channels, : conv.weight.shape[1]] = conv.weight
        wide.bias[: conv.out_channels] = conv.bias
    return wide


class _SplitPointwise(nn.Module):
    """A widening block's last pointwise conv and shortcut: relu(conv(h) + zero-padded shortcut), as two fused
    convolutions joined by a Concat instead of a Pad over channels and a separate Add and ReLU."""

    def __init__(self, conv: nn.Conv2d, shortcut_channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(conv.in_channels, shortcut_channels, 1)
        self.rest = nn.Conv2d(conv.in_channels, conv.out_channels - shortcut_channels, 1)
        with torch.no_grad():
            self.first.weight.copy_(conv.weight[:shortcut_channels])
            self.first.bias.copy_(conv.bias[:shortcut_channels])
            self.rest.weight.copy_(conv.weight[shortcut_channels:])
            self.rest.bias.copy_(conv.bias[shortcut_channels:])

    def forward(self, h: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.first(h) + shortcut), F.relu(self.rest(h))], dim=1)


class _Block(nn.Module):
    """A BlazeBlock (short range) or BottleneckBlock (full range) with rounded channels and a split pointwise conv
    where it widens."""

    def __init__(self, block: BlazeBlock | BottleneckBlock) -> None:
        super().__init__()
        self.stride = block.stride
        self.bottleneck = isinstance(block, BottleneckBlock)
        if self.bottleneck:
            self.dw1 = _widened_conv(block.dw1)
            self.inner: nn.Module = nn.Sequential(
                _widened_conv(block.pw1), nn.ReLU(), _widened_conv(block.dw2)
            )
            last = block.pw2
        else:
            self.dw1, self.inner, last = _widened_conv(block.dw), nn.Identity(), block.pw
        pw = _widened_conv(last)
        shortcut_channels = self.dw1.in_channels
        self.split = shortcut_channels < pw.out_channels
        self.pw: nn.Module = _SplitPointwise(pw, shortcut_channels) if self.split else pw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, h = x, self.dw1(x)
        else:
            shortcut, h = F.max_pool2d(x, self.stride), self.dw1(pad_same(x, 3, self.stride))
        h = self.inner(h)
        if self.split:
            return self.pw(h, shortcut)
        return F.relu(self.pw(h) + shortcut)


def for_onnx_runtime(model: nn.Module) -> nn.Module:
    """A copy of a BlazeFace network (short or full range) computing the same outputs with ORT-friendly layers."""
    model = copy.deepcopy(model).eval()

    def rebuild(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (BlazeBlock, BottleneckBlock)):
                setattr(module, name, _Block(child))
            elif isinstance(child, nn.Conv2d):
                head = name.startswith(("classifier", "regressor"))
                # The stem keeps its 3 input channels; the heads keep their output channels (the outputs' shape).
                setattr(module, name, _widened_conv(child, child.in_channels != 3, not head))
            else:
                rebuild(child)

    rebuild(model)
    return model


def fold_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold each zero Pad over the spatial axes, with constant pads, into the Conv that alone reads it.

    Run on a model whose constants are folded (`optimise_exported`): torch exports F.pad's amounts as a small graph.
    """
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.input[1] not in constants or len(readers.get(pad.output[0], [])) != 1:
            continue
        if len(pad.input) > 2 and pad.input[2] and float(constants.get(pad.input[2], 1)) != 0:
            continue
        modes = [a.s for a in pad.attribute if a.name == "mode"]
        (conv,) = readers[pad.output[0]]
        pads = [int(v) for v in constants[pad.input[1]]]  # begin then end, per axis (N, C, H, W)
        if modes not in ([], [b"constant"]) or conv.op_type != "Conv" or any(pads[i] for i in (0, 1, 4, 5)):
            continue
        attributes = {a.name: a for a in conv.attribute}
        if "auto_pad" in attributes and attributes["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        before = list(attributes["pads"].ints) if "pads" in attributes else [0, 0, 0, 0]
        if "pads" in attributes:
            conv.attribute.remove(attributes["pads"])
        conv.attribute.append(
            onnx.helper.make_attribute(
                "pads", [a + b for a, b in zip(before, pads[2:4] + pads[6:8], strict=True)]
            )
        )
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    domains = {node.domain for node in graph.node}
    for opset in [opset for opset in model.opset_import if opset.domain not in domains]:
        model.opset_import.remove(opset)  # ONNX Runtime lists every domain it knows when it saves
    return model


def optimise_exported(path: Path) -> None:
    """Fold the constants of a torch export (ONNX Runtime's basic, hardware-independent level), then its Pads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3  # the export's unused shape constants are dropped with a warning each
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    onnx.save(fold_pads(onnx.load(str(path))), str(path))
