"""Write the ONNX files that ship in the package, so detection on a CPU needs neither torch nor a first-run export.

    python tools/export_onnx.py                      # both BlazeFace networks and the bundled classifiers
    python tools/export_onnx.py --checkpoint my.pth  # a checkpoint of yours: my.onnx + my.onnx.json beside it

BlazeFace: `aletheia/assets/blazeface/blazeface_{short,full}_range.onnx` (uint8 NHWC in; dynamic batch, height,
width). Classifiers: `aletheia-lite2.onnx` beside `aletheia/assets/models/aletheia-lite2.pth` (and so for every
checkpoint bundled there), whatever architecture that checkpoint holds (read from it, as the pipeline reads it),
and `aletheia-lite2.onnx.json` with its architecture, kinds, calibration, preprocessing and the checkpoint's SHA-256. Rerun after replacing a checkpoint:
the pipeline ignores an export whose SHA-256 is not its checkpoint's, and tests/models/test_shipped_onnx.py fails.
Each file is checked against torch after writing (largest difference printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from aletheia.faces.networks import FULL_RANGE, SHORT_RANGE, BlazeFaceNetwork  # noqa: E402
from aletheia.faces.torch_networks import export_onnx as export_network  # noqa: E402
from aletheia.models.inference import OnnxClassifier  # noqa: E402
from aletheia.models.loader import load_classifier  # noqa: E402
from aletheia.models.runtime import export_checkpoint  # noqa: E402
from aletheia.models.spec import bundled_models  # noqa: E402


def export_detectors() -> None:
    rng = np.random.default_rng(0)
    for spec in (SHORT_RANGE, FULL_RANGE):
        export_network(spec, spec.onnx)
        spec.onnx.chmod(0o644)  # written through a private temporary file
        side = spec.input_size + spec.size_multiple
        images = rng.integers(0, 256, (2, side, side + spec.size_multiple, 3), dtype=np.uint8)
        ours = BlazeFaceNetwork(spec, backend="onnx").raw_outputs(images)
        theirs = BlazeFaceNetwork(spec, backend="torch").raw_outputs(images)
        worst = max(float((np.abs(a - b) / (1 + np.abs(b))).max()) for a, b in zip(ours, theirs, strict=True))
        print(f"{spec.onnx.relative_to(REPO_ROOT)}: {spec.onnx.stat().st_size / 1e6:.1f} MB, "
              f"largest difference from torch {worst:.1e} of 1 + |value|")  # fmt: skip


def export_classifier(checkpoint: Path) -> None:
    model, config, _ = load_classifier(None, checkpoint)
    onnx, sidecar = export_checkpoint(model, config, checkpoint)
    onnx.chmod(0o644)
    x = torch.randn(4, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x).numpy()
    got, _ = OnnxClassifier(onnx, config).infer(x.numpy())
    print(f"{onnx}: {config.name}, {onnx.stat().st_size / 1e6:.1f} MB, sidecar {sidecar.name}; "
          f"largest logit difference from torch {np.abs(got - want).max():.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="export this checkpoint only (default: the shipped files)"
    )
    args = parser.parse_args()
    if args.checkpoint:
        export_classifier(args.checkpoint)
        return
    export_detectors()
    for checkpoint in bundled_models().values():
        export_classifier(checkpoint)


if __name__ == "__main__":
    main()
