"""Photos decoded and searched in threads while faces are classified, video frames decoded ahead of their search:
same results, in order, errors where they were, no thread left behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from aletheia.overlap import ordered_map, prefetched
from tests.records import timeless

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"


def test_results_come_in_order_from_several_threads() -> None:
    names = set()

    def slow_square(x: int) -> int:
        names.add(threading.current_thread().name)
        time.sleep(0.01 * (x % 3))  # later items often finish first
        return x * x

    assert list(ordered_map(slow_square, range(20), workers=3, ahead=5)) == [x * x for x in range(20)]
    assert len(names) > 1


def test_an_error_is_raised_at_its_item_and_stops_the_rest() -> None:
    started = []

    def fail_at_3(x: int) -> int:
        started.append(x)
        if x == 3:
            raise ValueError("three")
        return x

    got = []
    with pytest.raises(ValueError, match="three"):
        for value in ordered_map(fail_at_3, range(100), workers=2, ahead=4):
            got.append(value)
    assert got == [0, 1, 2] and max(started) < 10  # bounded: far fewer than 100 were started


def test_prefetched_items_come_in_order_from_another_thread_a_bounded_number_ahead() -> None:
    produced, threads = [], set()

    def numbers():
        for x in range(50):
            produced.append(x)
            threads.add(threading.current_thread().name)
            yield x

    got = []
    for value in prefetched(numbers(), ahead=3):
        time.sleep(0.002)
        got.append(value)
        assert len(produced) <= len(got) + 4  # the queue (3) and the one item the producer is holding
    assert got == list(range(50)) and threads == {"aletheia-prefetch"}


def test_prefetched_raises_a_producer_error_in_its_place_and_closing_early_stops_the_thread() -> None:
    def fail_at_5():
        yield from range(5)
        raise ValueError("five")

    got = []
    with pytest.raises(ValueError, match="five"):
        for value in prefetched(fail_at_5(), ahead=2):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    stream = prefetched(endless(), ahead=2)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count <= 6  # stopped, not still producing
    assert not [t for t in threading.enumerate() if t.name == "aletheia-prefetch"]


def test_predict_many_in_threads_equals_serial(tmp_path: Path) -> None:
    from aletheia import DeepfakeDetectorPipeline

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    sources = [ASTRONAUT, bad, ASTRONAUT, ASTRONAUT] * 3
    pipeline = DeepfakeDetectorPipeline(batch_size=2)
    serial = [r.to_json() for r in pipeline.predict_many(sources, workers=0)]
    threaded = [r.to_json() for r in pipeline.predict_many(sources, workers=3)]
    assert timeless(threaded) == timeless(serial)
    assert [r["label"] for r in serial].count("error") == 3 and serial[0]["faces"]


def test_a_thread_per_core_with_single_threaded_sessions_else_one_per_two() -> None:
    import os

    from aletheia import onnxrt
    from aletheia.overlap import default_workers

    cpus = len(os.sched_getaffinity(0))
    before = onnxrt._num_threads
    try:
        onnxrt.set_num_threads(1)
        assert default_workers() == max(1, min(4, cpus))
        onnxrt.set_num_threads(2)
        assert default_workers() == max(1, min(4, cpus // 2))
    finally:
        onnxrt.set_num_threads(before)
