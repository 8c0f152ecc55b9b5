"""Work on a stream of items in threads, in order, a bounded number ahead: while one photo's faces are classified
the next photos are decoded and searched for faces.

Threads suit this work: decoding (Pillow), resizing (OpenCV) and both networks (ONNX Runtime) release the GIL, and
threads share the loaded models, where processes would each load their own. At most `ahead` results wait, which
bounds memory; results come back in input order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

__all__ = ["default_workers", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for the per-photo work: one per two CPUs, from 1 to 4 (each runs ONNX Runtime's own threads too).

    On 2 busy cores (benchmarks/torch_free_detect.py) one thread beside the classifier was never slower than serial
    and two threads were up to 11% slower: more threads than free cores only compete.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int) -> Iterator[R]:
    """`fn(item)` for each item, computed by `workers` threads at most `ahead` items in advance, yielded in order.

    An exception raised by `fn` is raised here, at its item. Stopping early (an exception, or the consumer closing
    the iterator) cancels what has not started and waits for what has.
    """
    iterator = iter(items)
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aletheia") as pool:
        try:
            for item in islice(iterator, max(1, ahead)):
                pending.append(pool.submit(fn, item))
            while pending:
                result = pending.popleft().result()
                for item in islice(iterator, 1):
                    pending.append(pool.submit(fn, item))
                yield result
        finally:
            for future in pending:
                future.cancel()
