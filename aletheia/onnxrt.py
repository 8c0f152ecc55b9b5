"""One way to open an ONNX Runtime session on the CPU, shared by the face detector and the classifier."""

from __future__ import annotations

from pathlib import Path


def cpu_session(path: str | Path, num_threads: int | None = None):
    """An InferenceSession with all graph optimisations, torch's thread count, and no idle spinning.

    ORT's worker threads spin for a while after each run by default; with two sessions in one process (BlazeFace,
    then the classifier) the first one's spinning threads took the cores from the second and doubled its time.
    """
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    # Follow torch's thread setting so a process tuned for torch (tests, servers) is not oversubscribed.
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
