"""Videos: frame sampling and seeking, rotation, bad files, face tracks, track scores, results and their JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from aletheia.io import InputError
from aletheia.video import (
    TrackLinker,
    VideoDetector,
    VideoReader,
    is_video_path,
    plot_timeline,
    predict_media,
    score_track,
)
from aletheia.video.tracks import iou
from tests.records import timeless

ASTRONAUT = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"
VIDEO_KEYS = ["path", "kind", "score", "label", "explanation", "threshold", "band", "tta", "model", "frames", "tracks",
              "warnings", "error", "provenance"]  # fmt: skip
FACE_KEYS = ["box", "detection_score", "score", "label", "spread", "warnings", "keypoints", "track"]
CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}
BITS = 8  # frame numbers are drawn as 8 black/white stripes


def write_video(
    target: Path | io.RawIOBase,
    frames: list[np.ndarray],
    fps: int = 10,
    *,
    codec: str = "libx264",
    fmt: str | None = None,
    gop: int | None = None,
    rotation: int = 0,
) -> None:
    """Encode RGB frames; `gop` sets the keyframe interval, `rotation` a display matrix (degrees counter-clockwise)."""
    with av.open(target if not isinstance(target, Path) else str(target), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def barcode(number: int, height: int = 48, width: int = 128) -> np.ndarray:
    """A frame showing `number` in binary: stripe k is white when bit k is set (survives lossy coding)."""
    bits = np.array([(number >> k) & 1 for k in range(BITS)], dtype=np.uint8) * 255
    return np.repeat(np.repeat(bits[None, :, None], width // BITS, axis=1), height, axis=0).repeat(3, axis=2)


def read_barcode(image: np.ndarray) -> int:
    stripes = image.reshape(image.shape[0], BITS, -1, 3).mean(axis=(0, 2, 3))
    return int(sum(1 << k for k, v in enumerate(stripes) if v > 127))


def numbered_video(path: Path, count: int = 60, fps: int = 10, **kwargs) -> Path:
    codec = kwargs.pop("codec", CODECS.get(path.suffix, "libx264"))
    write_video(path, [barcode(i) for i in range(count)], fps, codec=codec, **kwargs)
    return path


class _Unseekable(io.RawIOBase):
    """A write-only sink, like a pipe: the muxer cannot go back to write the duration or an index."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk) -> int:
        self.data += chunk
        return len(chunk)


def _moving_astronaut(
    count: int = 12, size: tuple[int, int] = (640, 360), side: int = 300, path: tuple[int, int] = (40, 240)
) -> list[np.ndarray]:
    """The astronaut (a `side` px photo, face about a fifth of it) moving right from x = path[0] to path[1]."""
    width, height = size
    face = cv2.resize(cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB), (side, side))
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 120, np.uint8)
        x = round(path[0] + (path[1] - path[0]) * i / max(1, count - 1))
        frame[(height - side) // 2 : (height + side) // 2, x : x + side] = face[:, : width - x]
        frames.append(frame)
    return frames


# -- decoding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_samples_evenly_spaced_frames_in_every_container(tmp_path: Path, suffix: str) -> None:
    path = numbered_video(tmp_path / f"numbers{suffix}", count=60, gop=7)
    with VideoReader(path) as reader:
        info = reader.info
        assert (info.width, info.height, info.fps, info.frame_count, info.rotation) == (128, 48, 10.0, 60, 0)
        assert info.duration == pytest.approx(6.0)
        frames = list(reader.frames(reader.sample_times(8)))
    expected = [0, 8, 17, 25, 34, 42, 51, 59]  # round(linspace(0, 59, 8))
    assert [f.index for f in frames] == expected
    assert [read_barcode(f.image) for f in frames] == expected
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in expected])
    assert all(f.image.dtype == np.uint8 and f.image.shape == (48, 128, 3) for f in frames)


def test_samples_at_a_frame_rate_and_never_repeats_a_frame(tmp_path: Path) -> None:
    path = numbered_video(tmp_path / "numbers.mp4", count=30, fps=10)
    with VideoReader(path) as reader:
        assert [read_barcode(f.image) for f in reader.frames(reader.sample_times(fps=2))] == [
            0,
            5,
            10,
            15,
            20,
            25,
        ]
        # More frames asked than there are: each frame once.
        assert [f.index for f in reader.frames(reader.sample_times(fps=25))] == list(range(30))
    with VideoReader(path) as reader:
        assert len(list(reader.frames(reader.sample_times(100)))) == 30


def test_seeks_past_keyframes_and_never_decodes_a_frame_twice(tmp_path: Path) -> None:
    class CountingReader(VideoReader):
        decoded = 0

        def _decode(self):
            for frame in super()._decode():
                CountingReader.decoded += 1
                yield frame

    short_gop = numbered_video(tmp_path / "short_gop.mp4", count=200, gop=10)
    with CountingReader(short_gop) as reader:
        frames = list(reader.frames(reader.sample_times(4)))
    assert [read_barcode(f.image) for f in frames] == [0, 66, 133, 199]
    assert CountingReader.decoded < 60  # a few frames from the keyframe before each wanted one, not all 200

    CountingReader.decoded = 0
    long_gop = numbered_video(tmp_path / "long_gop.mp4", count=200, gop=250)
    with CountingReader(long_gop) as reader:
        frames = list(reader.frames(reader.sample_times(16)))
    assert [read_barcode(f.image) for f in frames] == [f.index for f in frames]
    assert (
        CountingReader.decoded <= 200
    )  # one pass front to back: seeking back to the only keyframe would redo it


@pytest.mark.parametrize("fmt", ["webm", "matroska"])
def test_unknown_duration_and_frame_count(tmp_path: Path, fmt: str) -> None:
    sink = _Unseekable()
    codec = "libvpx-vp9" if fmt == "webm" else "libx264"
    write_video(sink, [barcode(i) for i in range(40)], 10, codec=codec, fmt=fmt)
    path = tmp_path / f"live.{'webm' if fmt == 'webm' else 'mkv'}"
    path.write_bytes(bytes(sink.data))
    with av.open(str(path)) as container:  # the premise: no duration, no frame count
        assert container.duration is None and container.streams.video[0].frames == 0
    with VideoReader(path) as reader:
        assert reader.info.frame_count == 40 and reader.info.duration == pytest.approx(4.0)
        assert [read_barcode(f.image) for f in reader.frames(reader.sample_times(5))] == [0, 10, 20, 29, 39]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int) -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:16, :16] = 255  # a white square top left
    path = tmp_path / f"rotated{rotation}.mp4"
    write_video(path, [frame] * 5, rotation=rotation)
    with VideoReader(path) as reader:
        assert reader.info.rotation == rotation
        upright = next(iter(reader.frames(reader.sample_times(1)))).image
    expected = np.rot90(frame, rotation // 90)
    assert upright.shape == expected.shape
    assert np.abs(upright.astype(int) - expected).mean() < 8
    # OpenCV's own auto-rotation agrees.
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    ok, bgr = capture.read()
    capture.release()
    assert ok and np.abs(bgr[..., ::-1].astype(int) - upright).mean() < 8


def _only_audio(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


def _corrupt_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[len(data) // 3 :] = rng.integers(0, 256, len(data) - len(data) // 3, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.mp4", lambda p: None, "no such file"),
        ("empty.mp4", lambda p: p.write_bytes(b""), "the file is empty"),
        ("text.mp4", lambda p: p.write_text("not a video at all"), "not a recognised video format"),
        ("folder.mp4", lambda p: p.mkdir(), "is a folder"),
        ("audio.mp4", _only_audio, "has no video stream"),
        (
            "truncated.mp4",  # x264 in MP4 keeps its index at the end: cut, nothing can be found
            lambda p: p.write_bytes(numbered_video(p.with_suffix(".src.mp4")).read_bytes()[:3000]),
            "not a recognised video format",
        ),
        (
            "truncated.mkv",  # Matroska says how long it is up front: cut, it ends too soon
            lambda p: p.write_bytes(numbered_video(p.with_suffix(".src.mkv"), count=200).read_bytes()[:6000]),
            "truncated or corrupt video: frames stop at",
        ),
        ("garbage.mkv", lambda p: (numbered_video(p, count=200), _corrupt_middle(p)), "truncated or corrupt"),
    ],
)
def test_bad_videos_raise_clear_input_errors(tmp_path: Path, name: str, make, message: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=message) as caught, VideoReader(path) as reader:
        list(reader.frames(reader.sample_times(8)))
    assert str(caught.value).startswith(str(path))


def test_is_video_path() -> None:
    assert all(is_video_path(f"a/b{s}") for s in (".mp4", ".AVI", ".mov", ".webm", ".mkv"))
    assert not any(is_video_path(f"a/b{s}") for s in (".jpg", ".png", ".txt", ""))


# -- tracks and their scores ------------------------------------------------------------------------------------------


def _box(x: float, y: float, side: float = 100.0) -> list[float]:
    return [x, y, x + side, y + side]


def test_tracks_follow_people_through_jumps_and_gaps() -> None:
    frames = []
    for t in range(10):
        boxes = [_box(100 + 20 * t, 100)]  # person A: overlaps from frame to frame
        if t not in (4, 5):  # person B: jumps 80 px per frame (no overlap after a gap) and is missed twice
            boxes.append(_box(1000 - 80 * t, 400, 120))
        frames.append(np.array(boxes, dtype=np.float32))
    frames[7] = np.concatenate([frames[7], [_box(1500, 50, 60)]])  # a one-off false detection
    tracks = TrackLinker().link(frames)
    assert len(tracks) == 2
    assert tracks[0] == [(t, 0) for t in range(10)]
    assert tracks[1] == [(t, 1) for t in range(10) if t not in (4, 5)]


def test_two_people_side_by_side_stay_apart_and_far_jumps_start_new_tracks() -> None:
    frames = [np.array([_box(0, 0), _box(130, 0)], dtype=np.float32) for _ in range(5)]
    frames.append(np.array([_box(400, 0)], dtype=np.float32))  # 2.7 face sizes away: someone else
    linker = TrackLinker(min_track_fraction=0.0, min_track_frames=1)
    tracks = linker.link(frames)
    assert tracks == [[(t, 0) for t in range(5)], [(t, 1) for t in range(5)], [(5, 0)]]


def test_short_tracks_are_dropped_unless_nothing_is_longer() -> None:
    only_brief = [np.zeros((0, 4), np.float32)] * 19 + [np.array([_box(0, 0)], np.float32)]
    assert TrackLinker().link(only_brief) == [[(19, 0)]]
    assert TrackLinker().link([np.zeros((0, 4), np.float32)] * 3) == []


def test_track_strategies() -> None:
    logits = np.log(np.array([0.9, 0.6, 0.3]) / (1 - np.array([0.9, 0.6, 0.3])))
    mean_logit = 1 / (1 + np.exp(-logits.mean()))
    assert score_track(logits) == pytest.approx(mean_logit)
    assert score_track(logits, "max") == pytest.approx(0.9)
    assert score_track(logits, "confident") == pytest.approx(0.6)  # neither branch: mean of probabilities

    def as_logits(p):
        return np.log(np.asarray(p) / (1 - np.asarray(p)))

    fakes = [0.95] * 13 + [0.5] * 19  # 13 of 32 confident fakes: their mean alone
    assert score_track(as_logits(fakes), "confident") == pytest.approx(0.95)
    assert score_track(as_logits([0.95] * 12 + [0.5] * 20), "confident") == pytest.approx(
        np.mean([0.95] * 12 + [0.5] * 20)
    )
    reals = [0.1] * 30 + [0.9] * 2  # over 90% confident reals: their mean alone
    assert score_track(as_logits(reals), "confident") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown track strategy"):
        score_track(logits, "median")


def test_face_search_follows_known_faces_and_finds_newcomers_at_full_searches() -> None:
    from aletheia.faces.extract import FaceDetector
    from aletheia.video.search import FrameFaceSearch

    frames = _moving_astronaut(count=6, size=(720, 360), path=(40, 90))
    newcomer = _moving_astronaut(count=1, size=(720, 360), path=(400, 400))[0]
    for frame in frames[2:]:
        frame[:, 400:] = newcomer[:, 400:]  # a second person from the third frame on
    detector = FaceDetector()
    search = FrameFaceSearch(detector, full_every=4)
    found = [search(frame) for frame in frames]
    assert [len(faces) for faces in found] == [1, 1, 1, 1, 2, 2]  # the newcomer waits for the full search
    for frame, faces in zip(frames, found, strict=True):
        for face in faces:  # a followed face is where a full search finds it
            assert max(iou(face.box, full.box) for full in detector.detect(frame)) > 0.7
    search.reset()
    assert len(search(frames[0])) == 1
    assert search(np.full_like(frames[0], 120)) == []  # the face is gone
    assert len(search(frames[1])) == 1  # followed where it was last seen


# -- the whole way through ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(b4_checkpoint: Path):
    from aletheia.pipeline import DeepfakeDetectorPipeline

    return DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint)


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "astronaut.mp4"
    write_video(path, _moving_astronaut(), fps=6)
    return path


def test_video_result_json_tracks_and_scores(pipeline, astronaut_video: Path) -> None:
    result = VideoDetector(pipeline, num_frames=6).predict(astronaut_video)
    record = json.loads(json.dumps(result.to_json()))
    assert list(record) == VIDEO_KEYS
    assert record["kind"] == "video" and record["error"] is None and record["model"] == pipeline.model_label
    assert [f["index"] for f in record["frames"]] == [0, 2, 4, 7, 9, 11]
    assert [f["time"] for f in record["frames"]] == pytest.approx(
        [i / 6 for i in (0, 2, 4, 7, 9, 11)], abs=1e-3
    )
    assert all(len(f["faces"]) == 1 and list(f["faces"][0]) == FACE_KEYS for f in record["frames"])
    assert [list(t) for t in record["tracks"]] == [["id", "score", "label", "warnings", "frames"]]
    track = record["tracks"][0]
    assert track["id"] == 0 and track["frames"] == [0, 2, 4, 7, 9, 11]
    faces = [face for frame in result.frames for face in frame.faces]
    assert all(face.track == 0 for face in faces)
    assert track["score"] == pytest.approx(1 / (1 + np.exp(-np.mean([f.logit for f in faces]))), abs=1e-6)
    assert record["score"] == track["score"]
    low, high = record["band"]
    by_band = "fake" if record["score"] >= high else "real" if record["score"] < low else "inconclusive"
    # The band decides, unless the person's frames disagree (then inconclusive, with a warning saying so).
    disagree = [w["code"] for w in track["warnings"]] == ["frames_disagree"]
    assert record["label"] == track["label"] == ("inconclusive" if disagree else by_band)
    # The face moves right; boxes follow it.
    xs = [frame["faces"][0]["box"][0] for frame in record["frames"]]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 150


def test_a_face_in_a_video_scores_as_in_a_photo_scored_once(astronaut_video: Path) -> None:
    from aletheia.pipeline import DeepfakeDetectorPipeline

    # The bundled model, not the untrained B4: that one scores every crop alike, so its scores could not differ.
    pipeline = DeepfakeDetectorPipeline()
    once = VideoDetector(pipeline, num_frames=3, full_detection_every=1).predict(astronaut_video)
    mirrored = VideoDetector(pipeline, num_frames=3, full_detection_every=1, tta="mirror").predict(
        astronaut_video
    )
    assert (once.tta, mirrored.tta, pipeline.tta) == ("none", "mirror", "mirror")
    assert "no_augmentation" not in [w.code for w in once.warnings]  # a person's frames are checked instead
    with VideoReader(astronaut_video) as reader:
        images = [f.image for f in reader.frames(reader.sample_times(3))]
    for frames, photo_pipeline in ((once.frames, pipeline.with_tta("none")), (mirrored.frames, pipeline)):
        for frame, image in zip(frames, images, strict=True):
            photo = photo_pipeline.predict(image)
            assert frame.faces, "the astronaut is in every frame"
            assert [f.score for f in frame.faces] == pytest.approx([f.score for f in photo.faces], abs=1e-5)
            np.testing.assert_allclose([f.box for f in frame.faces], [f.box for f in photo.faces], atol=1e-3)
    assert [f.spread for f in once.frames[0].faces] == [None]
    assert mirrored.frames[0].faces[0].spread is not None


def test_uploads_as_bytes_or_file_objects(pipeline, astronaut_video: Path) -> None:
    detector = VideoDetector(pipeline, num_frames=4)
    reference = detector.predict(astronaut_video).to_json()
    data = astronaut_video.read_bytes()
    from_bytes = detector.predict(data, path="upload.mp4").to_json()
    with astronaut_video.open("rb") as handle:
        from_file = detector.predict(handle).to_json()
    assert from_bytes["path"] == "upload.mp4" and from_file["path"] == "<BufferedReader>"
    for other in (from_bytes, from_file):
        assert timeless({**other, "path": None}) == timeless({**reference, "path": None})
    with pytest.raises(InputError, match="upload.mp4: the upload is empty"):
        detector.predict(b"", path="upload.mp4")
    with pytest.raises(InputError, match="<bytes>: not a recognised video format"):
        detector.predict(b"not a video at all")


def test_strategy_and_batching_options(pipeline, astronaut_video: Path) -> None:
    base = VideoDetector(pipeline, num_frames=6).predict(astronaut_video)
    logits = [f.logit for fr in base.frames for f in fr.faces]
    for strategy in ("max", "confident"):
        other = VideoDetector(pipeline, num_frames=6, strategy=strategy).predict(astronaut_video)
        assert other.score == pytest.approx(score_track(logits, strategy))
    small_batches = pipeline.batch_size
    try:
        pipeline.batch_size = 4  # 6 faces: one full batch while decoding, the rest at the end
        again = VideoDetector(pipeline, num_frames=6).predict(astronaut_video)
    finally:
        pipeline.batch_size = small_batches
    assert [f.logit for fr in again.frames for f in fr.faces] == pytest.approx(logits, abs=1e-5)
    with pytest.raises(ValueError, match="unknown track strategy"):
        VideoDetector(pipeline, strategy="vote")


def test_frame_progress_and_stopping_a_video_mid_way(pipeline, astronaut_video: Path) -> None:
    """Frames are decoded by a thread of their own ahead of the face search: a video stopped by its progress
    callback (a cancelled job) stops there, and leaves no thread decoding behind."""
    import threading

    heard = []
    VideoDetector(pipeline, num_frames=6).predict(astronaut_video, on_frame=lambda *a: heard.append(a))
    assert [done for done, _, _ in heard] == [1, 2, 3, 4, 5, 6] and heard[-1] == (6, 6, 6)

    def cancel(done: int, total: int, faces: int) -> None:
        if done == 2:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError, match="cancelled"):
        VideoDetector(pipeline, num_frames=6).predict(astronaut_video, on_frame=cancel)
    assert not [t for t in threading.enumerate() if t.name == "aletheia-prefetch"]


def test_no_face_video(pipeline, tmp_path: Path) -> None:
    path = tmp_path / "empty_room.mp4"
    write_video(path, [np.full((120, 160, 3), 90 + i, np.uint8) for i in range(10)])
    record = VideoDetector(pipeline, num_frames=4).predict(path).to_json()
    assert record["label"] == "no_face" and record["score"] is None and record["tracks"] == []
    assert len(record["frames"]) == 4 and all(f["faces"] == [] for f in record["frames"])


def test_predict_media_mixes_images_and_videos_in_order(
    pipeline, astronaut_video: Path, tmp_path: Path
) -> None:
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_text("nope")
    bad_image = tmp_path / "bad.jpg"
    bad_image.write_text("nope")
    sources = [ASTRONAUT, astronaut_video, bad_video, bad_image, ASTRONAUT, astronaut_video]
    results = list(predict_media(pipeline, sources, videos=VideoDetector(pipeline, num_frames=2)))
    records = [r.to_json() for r in results]
    assert [r["path"] for r in records] == [str(s) for s in sources]
    assert [r["kind"] for r in records] == ["image", "video", "video", "image", "image", "video"]
    assert [r["label"] == "error" for r in records] == [False, False, True, True, False, False]
    assert "not a recognised video format" in records[2]["error"] and list(records[2]) == VIDEO_KEYS
    assert records[2]["frames"] == [] and records[2]["tracks"] == []


def test_timeline_plot(pipeline, astronaut_video: Path, tmp_path: Path) -> None:
    result = VideoDetector(pipeline, num_frames=6).predict(astronaut_video)
    path = plot_timeline(result, tmp_path / "plots" / "astronaut.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= 300 and image.shape[1] >= 700


# -- shared development data -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_videos(shared_data: Path, pipeline) -> None:
    videos = sorted((shared_data / "videos").rglob("*.mp4"))
    assert videos
    detector = VideoDetector(pipeline, num_frames=4)
    for result in detector.predict_many(videos):
        record = result.to_json()
        assert record["error"] is None, record["error"]
        assert len(record["frames"]) == 4
        assert record["label"] in ("fake", "real", "inconclusive"), f"{result.path}: no face found"
        assert 0.0 <= record["score"] <= 1.0
        assert result.info is not None and result.info.duration > 5
