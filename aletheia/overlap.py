"""Work on a stream of items in threads, in order, a bounded number ahead: while one photo's faces are classified
the next photos are decoded and searched for faces (`ordered_map`); while a video's frames are searched for faces
and classified, the next frames are decoded (`prefetched`).

Threads suit this work: decoding (Pillow), resizing (OpenCV) and both networks (ONNX Runtime) release the GIL, and
threads share the loaded models, where processes would each load their own. At most `ahead` results wait, which
bounds memory; results come back in input order.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

__all__ = ["default_workers", "ordered_map", "prefetched"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for the per-photo work: the CPUs divided by the threads each ONNX Runtime session runs, from 1 to 4.

    With sessions of one thread each (what `aletheia detect` opens for several inputs: aletheia.onnxrt), one per
    CPU: every core decodes and searches photos while the classifier takes its turns. With sessions of ONNX
    Runtime's default (a thread per core), one per two CPUs: more threads than free cores only compete (on 2 busy
    cores, two were up to 11% slower than one, benchmarks/torch_free_detect.py).
    """
    from aletheia.onnxrt import default_num_threads

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_session = default_num_threads() or 2
    return max(1, min(4, cpus // per_session))


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


_END = object()


def prefetched(items: Iterable[T], ahead: int) -> Iterator[T]:
    """The items of `items`, produced by a thread of their own at most `ahead` in advance of the consumer, in order.

    An exception raised while producing is raised here, in its place. Stopping early (an exception, or the consumer
    closing the iterator) stops the thread at its next item and waits for it, so that what `items` reads from (an
    open video) may be closed as soon as this returns.
    """
    waiting: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                waiting.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # raised in the consumer, where it belongs
            put((_END, exc))
            return
        put((_END, None))

    thread = threading.Thread(target=produce, name="aletheia-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = waiting.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
