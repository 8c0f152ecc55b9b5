"""Classifier speed per backend: milliseconds per face crop, as a markdown table.

    .venv/bin/python benchmarks/classifier_backends.py [--model EfficientNetAutoAttB4] [--batch-sizes 1 16]
        [--repeats 10] [--threads N]

The model is randomly initialised (speed does not depend on the weights) and the ONNX file goes to a temporary
cache. Each cell is the median over ``--repeats`` timed calls after two warm-up calls, divided by the batch size.
OpenVINO bf16 is listed for reference only: it is not numerically equivalent (see aletheia/models/runtime.py).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from aletheia.models.registry import create_model, get_config
from aletheia.models.runtime import OpenVinoClassifier, compile_classifier

MODELS = ("EfficientNetAutoAttB4", "EfficientNetAutoAttLite0")
Runner = Callable[[torch.Tensor], object]


def ms_per_image(run: Runner, batch: torch.Tensor, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(2):
            run(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / len(batch)


def tuned_torch(model: nn.Module) -> Runner:
    """Eager torch with plain swish and channels_last: the fastest eager setting measured here without leaving torch."""
    tuned = copy.deepcopy(model)
    tuned.set_swish(memory_efficient=False)
    tuned = tuned.to(memory_format=torch.channels_last)
    return lambda x: tuned(x.contiguous(memory_format=torch.channels_last))


def timed(label: str, build: Callable[[], Runner], setup: dict[str, float]) -> Runner:
    start = time.perf_counter()
    runner = build()
    setup[label] = time.perf_counter() - start
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="EfficientNetAutoAttB4")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: torch's default)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    kwargs = {"pretrained": False} if "Lite" in args.model else {}
    model = create_model(args.model, **kwargs).eval()
    config = get_config(args.model)
    setup: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as cache:
        onnx = timed(
            "export + onnxruntime session", lambda: compile_classifier(model, config, "onnx", cache), setup
        )
        runners: dict[str, Runner] = {
            "torch eager (default)": model,
            "torch eager (plain swish + channels_last)": tuned_torch(model),
            "onnxruntime": onnx,
            "openvino f32": timed(
                "openvino f32 compile", lambda: compile_classifier(model, config, "openvino", cache), setup
            ),
            "openvino bf16 (not parity)": OpenVinoClassifier(onnx.path, config, precision="bf16"),
        }
        size = config.input_size
        rows = {label: [] for label in runners}
        for n in args.batch_sizes:
            batch = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
            for label, run in runners.items():
                rows[label].append(ms_per_image(run, batch, args.repeats))

    base = rows["torch eager (default)"]
    print(
        f"### {args.model}, {size}x{size}, {torch.get_num_threads()} threads, ms per image (speed-up vs torch)\n"
    )
    print("| backend | " + " | ".join(f"batch {n}" for n in args.batch_sizes) + " |")
    print("|---|" + "---|" * len(args.batch_sizes))
    for label, values in rows.items():
        cells = [f"{v:.1f} ({b / v:.1f}x)" for v, b in zip(values, base, strict=True)]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nOne-off setup: " + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items()))


if __name__ == "__main__":
    main()
