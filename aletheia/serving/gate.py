"""One model's turn-taking: photos go before videos.

A pipeline makes no thread-safety promise, so inference on one model is serialised. A video holds its model for
its whole run (seconds to minutes), but it gives the model up between sampled frames whenever a photo is waiting,
and takes it back once no photo is: a photo waits for at most one frame's work, never for a whole video.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ModelGate:
    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._held = False
        self._photos_waiting = 0

    @contextmanager
    def photo(self) -> Iterator[None]:
        """Hold the model for one photo; goes before any video waiting for it."""
        with self._turn:
            self._photos_waiting += 1
            try:
                self._turn.wait_for(lambda: not self._held)
            finally:
                self._photos_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def video(self) -> Iterator[None]:
        """Hold the model for a video; call `let_photos_through` between its frames."""
        with self._turn:
            self._turn.wait_for(self._free_for_video)
            self._held = True
        try:
            yield
        finally:
            self._release()

    def let_photos_through(self) -> None:
        """From inside `video()`: if photos are waiting, give the model up until they are all done."""
        with self._turn:
            if not self._photos_waiting:
                return
            self._held = False
            self._turn.notify_all()
            self._turn.wait_for(self._free_for_video)
            self._held = True

    def _free_for_video(self) -> bool:
        return not self._held and not self._photos_waiting

    def _release(self) -> None:
        with self._turn:
            self._held = False
            self._turn.notify_all()
