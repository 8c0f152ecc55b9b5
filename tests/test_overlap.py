"""Photos decoded and searched in threads while faces are classified: same results, in order, errors where they were."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from aletheia.overlap import ordered_map
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
