"""One way to open an ONNX Runtime session on the CPU, shared by the face detector and the classifier.

Imports no torch: detection on a CPU runs on ONNX Runtime, NumPy and OpenCV alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_num_threads: int | None = None


def set_num_threads(count: int | None) -> None:
    """Threads for every session opened afterwards (and for torch, if it is loaded); None: the default."""
    global _num_threads
    _num_threads = count or None
    if count and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def default_num_threads() -> int:
    """The thread count sessions use unless told: `set_num_threads`, else torch's own setting when torch is loaded
    (a process tuned for torch, such as tests or training, is not oversubscribed), else OMP_NUM_THREADS, else 0
    (ONNX Runtime's choice: one per physical core)."""
    if _num_threads:
        return _num_threads
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "0")))
    except ValueError:
        return 0


def thread_count() -> int:
    """`default_num_threads` as a number: where ONNX Runtime would choose, the CPUs this process may run on."""
    if default_num_threads():
        return default_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_session(path: str | Path, num_threads: int | None = None):
    """An InferenceSession with all graph optimisations, the process's thread count, no idle spinning, and memory
    from one arena shared by all sessions.

    ORT's worker threads spin for a while after each run by default; with two sessions in one process (BlazeFace,
    then the classifier) the first one's spinning threads took the cores from the second and doubled its time.
    Memory: each session's own arena grows in doubling chunks and keeps them, and a memory pattern (one block for
    all of a run's tensors) is kept per input shape, of which the face search has one per pyramid level and the
    classifier one per batch size. One shared arena growing by what is asked, without patterns, lowered the peak of
    a process scoring 1080p photos from 211 to 183 MB after one photo and from 287 to 214 MB after seven, at the
    same CPU time (a loaded 2-core EPYC).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or default_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    if _shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


_arena_registered: bool | None = None


def _shared_arena() -> bool:
    """Register, once per process, a CPU arena that grows by the size asked (not doubling) for sessions to share."""
    global _arena_registered
    if _arena_registered is None:
        import onnxruntime as ort

        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # max_mem 0: no limit; extend strategy 1: kSameAsRequested; initial chunk and max dead bytes: ORT's defaults
        try:
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
            _arena_registered = True
        except Exception:  # registered already by the host application: its own allocator is not ours to use
            _arena_registered = False
    return _arena_registered
