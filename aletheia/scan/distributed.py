"""The scan on a Dask distributed cluster: models loaded once per worker, inputs in shards, results in input order.

    aletheia detect photos/ -o out.jsonl --dask local:2          # a LocalCluster of 2 worker processes
    aletheia detect /mnt/archive -o out.jsonl --dask tcp://scheduler:8786

* **Models once per worker.** A `WorkerPlugin` (`DetectorPlugin`) builds the face detector and classifier in its
  `setup`, which every worker runs when the plugin is registered and every worker that joins later (a restarted
  one too) runs when it starts. A model that cannot load fails the registration, before any input is sent.
* **Shards.** Inputs go out `shard_size` at a time (a task per shard, so the scheduler's cost is paid per shard,
  not per input) and at most `window` shards are in flight: the walk stays lazy and a kill loses at most those.
* **Input order.** Shards finish in any order; each is held until the ones before it are written.
* **Dead workers.** When a worker dies (its process killed, out of memory), the scheduler gives its shards to
  another worker (up to `distributed.scheduler.allowed-failures` deaths per shard, 3 by default). A shard that
  keeps killing workers (`KilledWorker`) is split and its inputs retried one at a time; an input whose task still
  dies, twice, gets an error line rather than ending the scan.

Paths go to the workers as given: on a cluster of several machines, give paths every worker can read under the
same name (absolute paths on a shared filesystem), and a --model file they all have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

from distributed import Client, WorkerPlugin, as_completed, get_worker
from distributed.scheduler import KilledWorker

from aletheia.io import ScannedInput
from aletheia.scan.engine import ScanSettings, build_detectors, chunks, detect_in_order

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 32
SINGLE_INPUT_TRIES = 2  # an input whose task died alone this many times gets an error line


class DetectorPlugin(WorkerPlugin):
    """Loads the detectors once in each worker; shards find them by the plugin's name."""

    idempotent = True  # registering it again (the same settings) keeps the loaded models

    def __init__(self, settings: ScanSettings) -> None:
        self.settings = settings
        self.detectors = None
        digest = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
        self.name = (
            f"aletheia-detectors-{digest}"  # one per setting, so scans with other models can share a cluster
        )

    def setup(self, worker) -> None:
        self.detectors = build_detectors(self.settings)

    def teardown(self, worker) -> None:
        self.detectors = None


def scan_shard(plugin_name: str, items: list[tuple[str, str | None]], assume_face: bool) -> list[dict]:
    """Run on a worker: the JSON records of one shard's inputs, in order."""
    plugin = get_worker().plugins[plugin_name]
    pipeline, videos = plugin.detectors
    scanned = [ScannedInput(Path(path), problem) for path, problem in items]
    return [result.to_json() for result in detect_in_order(pipeline, videos, scanned, assume_face)]


def _lost_input(settings: ScanSettings, path: str, like: dict | None) -> dict:
    """The error line for an input whose worker died every time it was tried (threshold and model as in `like`,
    another record of this scan, when there is one)."""
    from aletheia.results import ImageResult
    from aletheia.video import VideoResult, is_video_path

    common = {
        "path": path,
        "threshold": like["threshold"] if like else settings.threshold,
        "model": like["model"] if like else (settings.model or "default"),
        "error": f"{path}: the worker scoring this input died each time it was tried "
        "(it may crash the decoder or exhaust memory)",
    }
    result = (
        VideoResult(**common, strategy=settings.track_strategy)
        if is_video_path(path)
        else ImageResult(**common)
    )
    return result.to_json()


def register_detectors(client: Client, settings: ScanSettings) -> DetectorPlugin:
    """Loads the models on every worker (once: a plugin already there under the same settings is kept). Raises what
    loading raised (a missing checkpoint, an unknown model) on the first worker that failed."""
    plugin = DetectorPlugin(settings)
    client.register_plugin(plugin, name=plugin.name)
    return plugin


def start_client(address: str, *, threads_per_worker: int = 1) -> tuple[Client, object | None]:
    """A client for `--dask ADDRESS`: `local:N` starts a LocalCluster of N worker processes (returned second, to be
    closed after the client), anything else is a scheduler address."""
    if address.startswith("local:"):
        from distributed import LocalCluster

        workers = int(address.split(":", 1)[1])
        if workers < 1:
            raise ValueError(f"--dask local:N needs at least one worker, got {workers}")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        return Client(cluster), cluster
    return Client(address), None


def local_threads(workers: int) -> int:
    """Torch / ONNX Runtime threads per worker so that N local workers share the cores without oversubscribing."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def scan_on_cluster(client: Client, inputs: Iterator[ScannedInput], settings: ScanSettings,  # noqa: C901
                    write: Callable[[list[dict], list | None], None], *, shard_size: int = DEFAULT_SHARD_SIZE,
                    window: int | None = None, on_shard_done: Callable[[int], None] | None = None,
                    task: Callable | None = None) -> None:  # fmt: skip
    """Score `inputs` on the cluster behind `client` and `write` each shard's records, in input order.

    `task` replaces `scan_shard` (same arguments; benchmarks/scan_throughput.py times the scheduler with a no-op)."""
    task = task or scan_shard
    plugin = register_detectors(client, settings)
    if window is None:
        threads = sum(client.nthreads().values()) or 1
        window = 2 * threads + 1
    shards = chunks(((str(i.path), i.problem) for i in inputs), max(1, shard_size))
    run = f"aletheia-{os.getpid()}-{id(plugin):x}"
    keys = count()
    futures = as_completed()
    # position -> the pieces of that shard: one list of inputs, or several after a split; finished pieces' records.
    pieces: dict[int, list] = {}
    finished: dict[int, dict[int, list[dict]]] = {}
    next_to_write = 0
    submitted = 0
    about: dict[str, tuple[int, int, list]] = {}  # future key -> (position, piece, inputs)
    waiting: dict[
        int, list[int]
    ] = {}  # position -> pieces of a split shard not yet sent (one goes at a time)
    tries: dict[tuple[int, int], int] = {}  # a lone input's deaths so far
    like: dict | None = None

    def submit(position: int, piece: int, items: list) -> None:
        future = client.submit(task, plugin.name, items, settings.assume_face,
                               key=f"{run}-{position}-{piece}-{next(keys)}", pure=False)  # fmt: skip
        about[future.key] = (position, piece, items)
        futures.add(future)

    def fill() -> None:
        nonlocal submitted
        while submitted - next_to_write < window:
            shard = next(shards, None)
            if shard is None:
                return
            pieces[submitted] = [shard]
            finished[submitted] = {}
            submit(submitted, 0, shard)
            submitted += 1

    fill()
    for future in futures:
        position, piece, items = about.pop(future.key)
        try:
            records = future.result()
            like = records[0] if records else like
        except KilledWorker as exc:
            if len(items) > 1:
                # Split: its inputs are retried one at a time, so that only a culprit can fail (tasks queued on a
                # dying worker die with it).
                log.warning("shard %d killed workers (%s); retrying its %d inputs one at a time",
                            position, exc, len(items))  # fmt: skip
                pieces[position][piece] = None
                singles = []
                for item in items:
                    pieces[position].append([item])
                    singles.append(len(pieces[position]) - 1)
                waiting[position] = singles[1:]
                submit(position, singles[0], [items[0]])
                continue
            tries[(position, piece)] = tries.get((position, piece), 0) + 1
            if tries[(position, piece)] < SINGLE_INPUT_TRIES:
                submit(position, piece, items)
                continue
            records = [_lost_input(settings, items[0][0], like)]
        finally:
            future.release()
        if waiting.get(position):
            following = waiting[position].pop(0)
            submit(position, following, pieces[position][following])
        finished[position][piece] = records
        while next_to_write in pieces and all(
            n in finished[next_to_write] for n, p in enumerate(pieces[next_to_write]) if p is not None
        ):
            done = finished.pop(next_to_write)
            parts = [done[n] for n, p in enumerate(pieces.pop(next_to_write)) if p is not None]
            write([record for part in parts for record in part], None)
            if on_shard_done is not None:
                on_shard_done(next_to_write)
            next_to_write += 1
        fill()
