"""The scan: inputs walked lazily, those already written skipped, the rest scored a batch at a time and written.

    from aletheia.scan import ScanSettings, run_scan, open_sink
    sink = open_sink(Path("out.jsonl"), "jsonl", resume=True)
    summary = run_scan(["photos/"], sink, ScanSettings(model="EfficientNetAutoAttB4_DFDC"))
    sink.close()

`run_scan` scores in this process; with `client=` (a dask.distributed Client) the same scan runs on a cluster
(`aletheia.scan.distributed`). Either way results are written in input order, one batch (or shard) at a time, and
at most the inputs in flight are lost to a kill.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby, islice
from pathlib import Path

from aletheia.io import IMAGE_EXTENSIONS, ScannedInput, walk_inputs
from aletheia.scan.sinks import input_key


@dataclass(frozen=True)
class ScanSettings:
    """Everything needed to build the detectors, here or on a worker (picklable, plain values)."""

    model: str | None = None  # a model spec (aletheia.models.spec); None: the default bundled model
    arch: str | None = None
    device: str = "cpu"
    threshold: float | None = None
    face_policy: str = "scale"
    batch_size: int = 32
    min_face_size: int | None = None
    backend: str = "auto"
    tta: str | None = None  # None: mirror for photos; videos score each face once (aletheia.tta.VIDEO_TTA)
    assume_face: bool = False
    frames: int = 32
    fps: float | None = None
    track_strategy: str = "mean_logit"
    threads: int | None = None  # torch / ONNX Runtime threads in each process (None: their default)

    def to_dict(self) -> dict:
        return asdict(self)


def build_detectors(settings: ScanSettings):
    """(pipeline, video detector) for `settings`: models load here, once."""
    from aletheia.models.spec import resolve_model_spec
    from aletheia.onnxrt import set_num_threads
    from aletheia.pipeline import DeepfakeDetectorPipeline
    from aletheia.tta import DEFAULT_TTA
    from aletheia.video import VideoDetector

    if settings.threads:
        set_num_threads(settings.threads)
        if settings.backend == "torch" or not settings.device.startswith("cpu"):
            import torch  # only where torch runs: on a CPU detection needs none

            torch.set_num_threads(settings.threads)
    pipeline = DeepfakeDetectorPipeline(
        resolve_model_spec(settings.model, arch=settings.arch),
        device=settings.device,
        threshold=settings.threshold,
        face_policy=settings.face_policy,
        batch_size=settings.batch_size,
        min_face_size=settings.min_face_size,
        backend=settings.backend,
        tta=DEFAULT_TTA if settings.tta is None else settings.tta,
    )
    videos = VideoDetector(
        pipeline,
        num_frames=settings.frames,
        fps=settings.fps,
        strategy=settings.track_strategy,
        tta=settings.tta,
    )
    return pipeline, videos


def detect_in_order(pipeline, videos, items: Iterable[ScannedInput], assume_face: bool) -> Iterator:
    """Every input's result, in order: what the walk could not read is reported with its problem, the rest goes
    through predict_media in runs."""
    from aletheia.video import is_video_path, predict_media

    for unreadable, group in groupby(items, key=lambda item: item.problem is not None):
        if not unreadable:
            paths = [item.path for item in group]
            yield from predict_media(pipeline, paths, assume_face=assume_face, videos=videos)
            continue
        for item in group:
            maker = videos if is_video_path(item.path) else pipeline
            yield maker.error_result(str(item.path), item.problem)


NOT_MEDIA_NAMED = 10


@dataclass
class ScanSummary:
    """What a scan did: `done` inputs scored and written this run (by label), `skipped` already in the output."""

    done: int = 0
    skipped: int = 0
    labels: Counter = field(default_factory=Counter)
    # Files in the folders scanned that are neither images nor videos (by extension): counted and reported (the
    # first NOT_MEDIA_NAMED by name), never scored.
    not_media: int = 0
    not_media_paths: list[str] = field(default_factory=list)

    def add_not_media(self, path: Path) -> None:
        self.not_media += 1
        if len(self.not_media_paths) < NOT_MEDIA_NAMED:
            self.not_media_paths.append(str(path))

    @property
    def failed(self) -> int:
        return self.labels["error"]

    @property
    def no_face(self) -> int:
        return self.labels["no_face"]

    def add(self, records: list[dict]) -> None:
        self.done += len(records)
        self.labels.update(r["label"] for r in records)

    def line(self) -> str:
        order = ["fake", "inconclusive", "real", "no_face", "error"]
        labels = sorted(self.labels, key=lambda k: (order.index(k) if k in order else len(order), k))
        by_label = ", ".join(f"{k.replace('_', ' ')} {self.labels[k]:,}" for k in labels)
        text = f"{self.done:,} done" + (f" ({by_label})" if by_label else "")
        text += f", {self.skipped:,} skipped as already done, {self.failed:,} failed, {self.no_face:,} with no face"
        if self.not_media:
            text += f", {self.not_media:,} skipped: not an image or video"
        return text

    def to_json(self) -> dict:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "no_face": self.no_face,
                "not_media": self.not_media, "labels": dict(self.labels)}  # fmt: skip


class NoInputs(Exception):
    """The paths name no image or video files."""


def pending_inputs(paths: Iterable[str | Path], done: set[str], summary: ScanSummary,
                   extensions: frozenset[str] | None = None) -> Iterator[ScannedInput]:  # fmt: skip
    """The inputs under `paths` (walked lazily) that are not in `done`; counts the others as skipped.
    Raises NoInputs before yielding anything when the paths hold no inputs at all."""
    from aletheia.video import VIDEO_EXTENSIONS

    paths = list(paths)
    walk = walk_inputs(paths, extensions or (IMAGE_EXTENSIONS | VIDEO_EXTENSIONS),
                       on_other=summary.add_not_media)  # fmt: skip
    first = next(walk, None)  # now, so that a scan of nothing fails before any model loads
    if first is None:
        raise NoInputs(f"no image or video files found in {' '.join(map(str, paths))}")
    return _not_done(_chain(first, walk), done, summary)


def _not_done(items: Iterator[ScannedInput], done: set[str], summary: ScanSummary) -> Iterator[ScannedInput]:
    for item in items:
        if done and input_key(str(item.path)) in done:
            summary.skipped += 1
            continue
        yield item


def _chain(first, rest):
    yield first
    yield from rest


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# on_batch(records, results): results are the typed results in this process, None from a cluster.
BatchCallback = Callable[[list[dict], list | None], None]


def run_scan(paths: Iterable[str | Path], sink, settings: ScanSettings, *, client=None, detectors=None,
             chunk_size: int | None = None, on_batch: BatchCallback | None = None,
             summary: ScanSummary | None = None, **cluster_options) -> ScanSummary:  # fmt: skip
    """Scan `paths` into `sink` (which knows what is already done) and return what was done.

    In this process (the default) inputs are scored as one stream and written `chunk_size` at a time (default: the
    batch size); with a dask `client`, in shards on the cluster's workers (`aletheia.scan.distributed`).
    """
    summary = summary if summary is not None else ScanSummary()
    inputs = pending_inputs(paths, getattr(sink, "done", set()), summary)

    def write(records: list[dict], results: list | None) -> None:
        sink.write(records)
        summary.add(records)
        if on_batch is not None:
            on_batch(records, results)

    if client is not None:
        from aletheia.scan.distributed import scan_on_cluster

        scan_on_cluster(client, inputs, settings, write, **cluster_options)
        return summary
    pipeline, videos = detectors if detectors is not None else build_detectors(settings)
    # One stream through the pipeline, written a chunk at a time: photos keep being decoded and searched while a
    # chunk is written (restarting the pipeline per chunk would idle it at every chunk's start and end).
    results = detect_in_order(pipeline, videos, inputs, settings.assume_face)
    for chunk in chunks(results, chunk_size or settings.batch_size):
        write([r.to_json() for r in chunk], chunk)
    return summary
