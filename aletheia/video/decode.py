"""Decode only the frames a video is sampled at, upright, as RGB uint8 arrays.

Frames are picked by presentation time: `num_frames` evenly spaced from the first frame to the last, or one every
1/`fps` seconds. For each wanted time the reader seeks to the keyframe before it only when that keyframe lies beyond
what it has already decoded, and otherwise decodes forward: a file with x264's 250-frame keyframe interval is
decoded once, front to back, while a long video with frequent keyframes skips most of its frames.

When the header gives no duration or frame count (live recordings, some WebM/MKV), the packets are counted first
(demuxing reads the file but decodes nothing). Frames no other frame refers to (most B-frames) are not decoded
unless they are at a wanted time: with x264's defaults about half the frames, and a quarter of the decoding time for
32 frames of the development videos, with pixel-identical results.
The display matrix (phone videos) is applied, so faces stand upright.
Every way a video can be bad ends in `InputError`, naming the file and what was wrong: whatever PyAV or a codec
raises (no decoder for the codec, a corrupt stream, ...) is that video's InputError, never a crash.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from aletheia.io import InputError, check_input_file

VideoInput = str | Path | bytes | BinaryIO
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".webm", ".mkv"})
DEFAULT_NUM_FRAMES = 32
# Without a keyframe index, seek only across gaps this long (seconds); shorter ones are decoded through.
_BLIND_SEEK_SECONDS = 10.0
# Frames this close after a wanted time (in frames) are always decoded; others may be skipped if nothing refers to them.
_WANTED_SPAN = 2
# A video may end this much (seconds, or this fraction of it) before its header says without being called truncated.
_END_SLACK_SECONDS, _END_SLACK_FRACTION = 1.0, 0.05


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    width: int  # upright, after rotation
    height: int
    fps: float
    duration: float  # seconds, from the first frame to the end of the last
    frame_count: int
    rotation: int  # degrees counter-clockwise applied to decoded frames: 0, 90, 180 or 270
    codec: str


@dataclass
class SampledFrame:
    index: int  # frame number (presentation order), from the timestamp and the frame rate
    time: float  # seconds from the first frame
    image: np.ndarray  # H x W x 3 RGB uint8, upright


class VideoReader:
    """An open video (a path, the bytes of an upload, or a binary file object): `info`, then `sample_times()` and
    `frames(times)`. Use as a context manager. `name` is what error messages call it (default: the path)."""

    def __init__(self, source: VideoInput, name: str | None = None) -> None:
        self.name = name or (str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>")
        if isinstance(source, (str, Path)):
            path = Path(source)
            check_input_file(path, self.name, "a video")
            target: str | BinaryIO = str(path)
            self._reopen: Callable[[], av.container.InputContainer] | None = lambda: av.open(str(path))
        elif isinstance(source, bytes):
            if not source:
                raise InputError(f"{self.name}: the upload is empty")
            target = io.BytesIO(source)
            self._reopen = lambda: av.open(io.BytesIO(source))
        else:
            target, self._reopen = source, None
        try:
            self._container = av.open(target)
        except PermissionError as exc:
            raise InputError(f"{self.name}: permission denied") from exc
        except Exception as exc:  # FFmpegError, UnicodeDecodeError, ...: nothing here is a crash
            raise InputError(f"{self.name}: not a recognised video format ({_why(exc)})") from exc
        try:
            self.info = self._open_stream()
        except BaseException as exc:
            self._container.close()
            if isinstance(exc, InputError) or not isinstance(exc, Exception):
                raise
            raise InputError(f"{self.name}: corrupt or unreadable video ({_why(exc)})") from exc

    def _open_stream(self) -> VideoInfo:
        streams = [
            s for s in self._container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            raise InputError(f"{self.name}: has no video stream")
        stream = self._stream = streams[0]
        if stream.codec_context is None:
            raise InputError(f"{self.name}: no decoder for its video codec")
        stream.thread_type = "AUTO"
        self._tb = stream.time_base or Fraction(1, 1000)
        self._keyframes = sorted(e.timestamp for e in stream.index_entries if e.is_keyframe)
        self._can_seek = True
        self._corrupt_packets = 0
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        # One frame in time-base units: half of it is the tolerance when matching times, and frames without
        # timestamps (raw streams) are numbered with it.
        self._frame_ticks = 1 / (fps or 25.0) / self._tb
        self._furthest: av.VideoFrame | None = None  # the latest frame decoded so far
        self._wanted: list[float] = []  # sorted pts of the wanted times; empty: decode every frame
        self._decoder = self._decode()
        first = self._pending = next(self._decoder, None)  # the last decoded frame, may match the next time
        if first is None:
            raise InputError(f"{self.name}: no frame could be decoded{self._corruption_note()}")
        self._start = first.pts
        if self._keyframes:
            # Index entries carry decoding timestamps, which lag presentation ones by the reordering delay (a
            # keyframe sought by its dts would land on the keyframe before it): shift them by the first one's lag.
            lag = max(0, self._start - self._keyframes[0])
            self._keyframes = [k + lag for k in self._keyframes]
        return self._measure(stream, first, fps)

    def _measure(self, stream: av.video.stream.VideoStream, first: av.VideoFrame, fps: float) -> VideoInfo:
        """Frame rate, duration and frame count from the header, else from the packets; size after rotation."""
        count = stream.frames
        duration = float(stream.duration * self._tb) if stream.duration else None
        if duration is None and self._container.duration:
            duration = self._container.duration / av.time_base
        if not self._can_seek:
            # A raw stream (H.264 Annex B, ...): no timestamps, and whatever length the header guesses is wrong.
            fps = fps or 25.0
            count = self._count_raw_frames()
            duration = count / fps
        elif not (fps > 0 and (count > 0 or duration)):
            fps, count, duration = self._count_packets(fps)
        count = count if count > 0 else max(1, round(duration * fps))
        duration = duration or count / fps
        rotation = round((first.rotation or 0) / 90) % 4 * 90
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        return VideoInfo(width, height, fps, duration, count, rotation, stream.codec_context.name)

    def _count_packets(self, fps: float) -> tuple[float, int, float]:
        """Frame rate, frame count and duration from the packets themselves; then back to the first frame."""
        stamps = []
        self._seek(self._start)
        try:
            for packet in self._container.demux(self._stream):
                if packet.size and packet.pts is not None:
                    stamps.append(packet.pts)
        except av.FFmpegError as exc:
            raise InputError(f"{self.name}: corrupt video, cannot read its packets ({_why(exc)})") from exc
        self._seek(self._start)
        stamps.sort()
        span = float((stamps[-1] - stamps[0]) * self._tb) if len(stamps) > 1 else 0.0
        if not fps:
            fps = (len(stamps) - 1) / span if span > 0 else 25.0
        return fps, max(1, len(stamps)), span + 1 / fps

    def _count_raw_frames(self) -> int:
        """The packets (a frame each) of a raw stream, counted on a second opening: it cannot seek back."""
        if self._reopen is None:
            return 1
        try:
            with self._reopen() as container:
                return max(1, sum(1 for packet in container.demux(video=0) if packet.size))
        except av.FFmpegError as exc:
            raise InputError(f"{self.name}: corrupt video, cannot read its packets ({_why(exc)})") from exc

    def sample_times(self, num_frames: int = DEFAULT_NUM_FRAMES, fps: float | None = None) -> np.ndarray:
        """Times (seconds) of `num_frames` frames evenly spaced over the video, or of one every 1/`fps` s."""
        info = self.info
        if fps is not None:
            if not fps > 0:
                raise ValueError(f"fps must be positive, got {fps}")
            # Faster than the video's own rate would only repeat frames (and list billions of times at 1e9).
            step = 1.0 / min(fps, info.fps)
            return np.arange(0.0, max(info.duration - 0.5 / info.fps, 1e-9), step)
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        # More than the frame count would only repeat frames: never list more times than there are frames.
        count = min(num_frames, info.frame_count)
        return np.unique(np.linspace(0, info.frame_count - 1, count).round()) / info.fps

    def frames(self, times: np.ndarray) -> Iterator[SampledFrame]:
        """The frame shown at each time (the first at or after it, to within half a frame), in time order.

        Times that fall on the same frame yield it once. Raises `InputError` when the video ends well before its
        header says (truncated) or cannot be read.
        """
        half_frame = 0.5 * self._frame_ticks
        self._wanted = [self._start + float(t) / self._tb - half_frame for t in sorted(times)]
        emitted = None
        for target in self._wanted:
            seconds = float((target + half_frame - self._start) * self._tb)
            try:
                frame = self._frame_at(target)
                if frame is None:
                    frame = self._ended_early(seconds)
                if frame.pts == emitted:
                    continue
                emitted = frame.pts
                sampled = self._to_sampled(frame)
            except InputError:
                raise
            except Exception as exc:  # a codec's or PyAV's own failure mid-stream
                raise InputError(
                    f"{self.name}: corrupt or unreadable video ({_why(exc)}){self._corruption_note()}"
                ) from exc
            yield sampled

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding ---------------------------------------------------------------------------------------------------

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position; a packet that fails to decode is skipped (as ffmpeg does) and counted."""
        context = self._stream.codec_context
        try:
            for packet in self._container.demux(self._stream):
                context.skip_frame = "DEFAULT" if self._is_wanted(packet.pts) else "NONREF"
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    self._corrupt_packets += 1
                    continue
                for frame in frames:
                    if frame.pts is None:  # raw streams: count frames instead, and never seek
                        previous = self._furthest.pts if self._furthest is not None else -self._frame_ticks
                        frame.pts, self._can_seek = round(previous + self._frame_ticks), False
                    if self._furthest is None or frame.pts > self._furthest.pts:
                        self._furthest = frame
                    yield frame
        except av.FFmpegError as exc:
            raise InputError(f"{self.name}: corrupt video, cannot read it ({_why(exc)})") from exc

    def _is_wanted(self, pts: int | None) -> bool:
        """Whether a packet's frame lies at, or just after, a wanted time (or every frame is wanted)."""
        if pts is None or not self._wanted:
            return True
        before = bisect.bisect_right(self._wanted, pts) - 1
        return before >= 0 and pts < self._wanted[before] + _WANTED_SPAN * self._frame_ticks

    def _frame_at(self, target: float) -> av.VideoFrame | None:
        """The first frame with pts >= target, seeking first when that decodes fewer frames; None at the end."""
        if self._pending is not None and self._pending.pts >= target:
            if self._pending.pts < target + self._frame_ticks:
                return self._pending
            self._seek(target)  # the wanted frame lies behind: a second pass, or times out of order
        elif self._should_seek(target):
            self._seek(target)
        for frame in self._decoder:
            self._pending = frame
            if frame.pts >= target:
                return frame
        return None

    def _should_seek(self, target: float) -> bool:
        if not self._can_seek:
            return False
        if self._pending is None:
            return True
        position = self._pending.pts
        if self._keyframes:
            before = bisect.bisect_right(self._keyframes, target) - 1
            return before >= 0 and self._keyframes[before] > position
        return (target - position) * self._tb > _BLIND_SEEK_SECONDS

    def _seek(self, target: float) -> None:
        try:
            self._container.seek(max(int(target), self._start), stream=self._stream, backward=True)
        except av.FFmpegError:
            self._can_seek = False  # decode through from here on
            return
        self._decoder = self._decode()
        self._pending = None

    def _ended_early(self, seconds: float) -> av.VideoFrame:
        """Past the last frame: fine (the last frame stands in) if close to where the header says the video ends."""
        last = self._furthest
        assert last is not None  # the first frame was decoded when opening
        last_seconds = float((last.pts - self._start) * self._tb)
        if seconds - last_seconds <= max(_END_SLACK_SECONDS, _END_SLACK_FRACTION * self.info.duration):
            return last
        raise InputError(
            f"{self.name}: truncated or corrupt video: frames stop at {last_seconds:.2f} s "
            f"but it should last {self.info.duration:.2f} s{self._corruption_note()}"
        )

    def _corruption_note(self) -> str:
        return f" ({self._corrupt_packets} packets failed to decode)" if self._corrupt_packets else ""

    def _to_sampled(self, frame: av.VideoFrame) -> SampledFrame:
        seconds = max(0.0, float((frame.pts - self._start) * self._tb))
        try:
            image = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as exc:
            raise InputError(f"{self.name}: cannot convert frames to RGB ({_why(exc)})") from exc
        if self.info.rotation:
            image = np.ascontiguousarray(np.rot90(image, self.info.rotation // 90))
        return SampledFrame(index=round(seconds * self.info.fps), time=seconds, image=image)


def _why(exc: Exception) -> str:
    """FFmpeg's reason without the file name and error number that PyAV adds."""
    return getattr(exc, "strerror", None) or str(exc)


def sample_frames(
    source: VideoInput, num_frames: int = DEFAULT_NUM_FRAMES, fps: float | None = None
) -> Iterator[SampledFrame]:
    """Open a video and yield its sampled frames (see `VideoReader.sample_times`), closing it at the end."""
    with VideoReader(source) as reader:
        yield from reader.frames(reader.sample_times(num_frames, fps))
