"""The model gate's turn-taking, with real threads: photos go before a video, between its frames."""

from __future__ import annotations

import threading

from aletheia.serving.gate import ModelGate


def test_a_waiting_photo_goes_between_a_videos_frames() -> None:
    gate, order = ModelGate(), []
    video_started, photo_queued = threading.Event(), threading.Event()

    def video() -> None:
        with gate.video():
            video_started.set()
            order.append("frame 1")
            photo_queued.wait(5)
            while not gate._photos_waiting:  # the photo thread is about to wait on the gate
                pass
            gate.let_photos_through()
            order.append("frame 2")

    def photo() -> None:
        video_started.wait(5)
        photo_queued.set()
        with gate.photo():
            order.append("photo")

    threads = [threading.Thread(target=video), threading.Thread(target=photo)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["frame 1", "photo", "frame 2"]


def test_a_video_waits_while_photos_are_queued_and_never_runs_beside_one() -> None:
    gate, inside, overlaps = ModelGate(), [0], []
    lock = threading.Lock()

    def work() -> None:
        with lock:
            inside[0] += 1
            overlaps.append(inside[0])
        with lock:
            inside[0] -= 1

    def hold(kind: str) -> None:
        if kind == "photo":
            with gate.photo():
                work()
            return
        with gate.video():
            for _ in range(3):  # frames, with photos let through between them
                work()
                gate.let_photos_through()

    threads = [threading.Thread(target=hold, args=(k,)) for k in ["video", "photo"] * 20]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert overlaps and max(overlaps) == 1, "one holder at a time"


def test_letting_photos_through_with_none_waiting_keeps_the_model() -> None:
    gate = ModelGate()
    with gate.video():
        gate.let_photos_through()
        assert gate._held
    assert not gate._held
