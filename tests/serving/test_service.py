"""The service shared by the web app and the REST API: per-request thresholds, locks, names in messages."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aletheia.io import InputError
from aletheia.serving.service import (
    DetectionService,
    UnknownServedModelError,
    is_video_upload,
    load_pipelines,
    looks_like_video,
    upload_name,
    with_threshold,
)

from .conftest import ASTRONAUT, TEST_VIDEO_FRAMES


@pytest.fixture(scope="module")
def service(served_pipelines: dict) -> DetectionService:
    return DetectionService(served_pipelines)


def test_threshold_is_per_request_and_never_mutates_shared_state(service: DetectionService) -> None:
    data = ASTRONAUT.read_bytes()
    pipeline = service.pipelines["b4"]
    low = service.detect(data, "a.jpg", threshold=0.0).result
    high = service.detect(data, "a.jpg", threshold=1.0).result
    assert (low.label, low.threshold) == ("fake", 0.0)
    assert (high.label, high.threshold) == ("real", 1.0)
    assert low.score == high.score and pipeline.threshold == 0.5
    default = service.detect(data, "a.jpg").result
    assert default.threshold == 0.5 and default.path == "a.jpg"
    assert service.detect(data, "a.jpg", model="b4-at-0.3").result.threshold == 0.3


def test_with_threshold_leaves_the_original_alone(service: DetectionService) -> None:
    result = service.detect(ASTRONAUT.read_bytes(), "a.jpg").result
    assert with_threshold(result, 0.0).label == "fake" and result.threshold == 0.5


def test_concurrent_requests_with_different_thresholds(service: DetectionService) -> None:
    data = ASTRONAUT.read_bytes()
    thresholds = [0.0, 1.0] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: service.detect(data, "a.jpg", threshold=t).result, thresholds))
    assert [r.label for r in results] == ["fake", "real"] * 4
    assert len({r.score for r in results}) == 1


def test_bad_input_names_the_upload(service: DetectionService) -> None:
    with pytest.raises(InputError, match=r"^holiday\.jpg: not a recognised image format"):
        service.detect(b"not an image at all", "holiday.jpg")
    with pytest.raises(InputError, match=r"^empty\.png: the upload is empty"):
        service.detect(b"", "empty.png")
    with pytest.raises(UnknownServedModelError, match="b4, b4-at-0.3"):
        service.detect(ASTRONAUT.read_bytes(), "a.jpg", model="nope")
    with pytest.raises(ValueError, match="between 0 and 1"):
        service.detect(ASTRONAUT.read_bytes(), "a.jpg", threshold=1.5)


def test_attention_comes_back_when_asked(service: DetectionService) -> None:
    buffer = io.BytesIO()
    Image.open(ASTRONAUT).save(buffer, format="PNG")
    face = service.detect(buffer.getvalue(), "a.png", return_attention=True).result.faces[0]
    assert face.attention.shape == (28, 28) and face.crop.shape == (224, 224, 3)
    assert np.isfinite(face.attention).all()


def test_upload_name_never_exposes_server_paths() -> None:
    assert upload_name("/tmp/gradio/abc123/photo.jpg") == "photo.jpg"
    assert upload_name("C:/Users/x/photo.jpg") == "photo.jpg"
    assert upload_name(None) == "upload" and upload_name("") == "upload"


def test_load_pipelines_keeps_models_with_the_same_file_name_apart(b4_checkpoint: Path) -> None:
    pipelines = load_pipelines([str(b4_checkpoint), str(b4_checkpoint)])
    assert list(pipelines) == [b4_checkpoint.name, f"{b4_checkpoint.name} (2)"]
    assert DetectionService(pipelines).default_model == b4_checkpoint.name


def test_a_server_needs_a_model() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        DetectionService({})


def test_no_spec_means_the_bundled_default_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, b4_checkpoint: Path
) -> None:
    from aletheia.models import spec
    from aletheia.models.checkpoints import CheckpointError

    monkeypatch.setattr(spec, "DEFAULT_MODEL", b4_checkpoint)
    assert list(load_pipelines([])) == [b4_checkpoint.name]
    monkeypatch.setattr(spec, "DEFAULT_MODEL", tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no model given"):
        load_pipelines([])


def test_videos_are_told_by_contents_first_then_by_name(astronaut_video: Path, tmp_path: Path) -> None:
    from tests.test_video import CODECS, numbered_video

    for suffix in CODECS:  # every container the server reads, under a name that does not say so
        data = numbered_video(tmp_path / f"n{suffix}", count=3).read_bytes()
        assert looks_like_video(data) and is_video_upload(data, "upload"), suffix
    photo = ASTRONAUT.read_bytes()
    assert not is_video_upload(photo, "a.jpg") and not is_video_upload(photo, "photo.mp4")
    assert is_video_upload(b"garbage", "clip.MOV") and is_video_upload(b"", "clip.mp4")
    assert not is_video_upload(b"garbage", "notes.txt") and not looks_like_video(b"")


def test_video_threshold_is_per_request_and_crops_line_up_with_faces(
    service: DetectionService, astronaut_video: Path
) -> None:
    data = astronaut_video.read_bytes()
    pipeline = service.pipelines["b4"]
    low = service.detect_video(data, "walk.mp4", threshold=0.0, num_frames=TEST_VIDEO_FRAMES, keep_crops=True)
    high = with_threshold(low.result, 1.0)
    assert (low.result.label, high.label, low.result.threshold) == ("fake", "real", 0.0)
    assert high.tracks == low.result.tracks and pipeline.threshold == 0.5
    faces = [face for frame in low.result.frames for face in frame.faces]
    kept = [face for face in faces if face.crop is not None]
    assert 1 <= len(kept) <= 3 * len(low.result.tracks) and all(f.track is not None for f in kept)
    for face in kept:  # each crop is the one its logit came from
        assert pipeline.logits(face.crop[None])[0] == pytest.approx(face.logit, abs=1e-4)
    plain = service.detect_video(data, "walk.mp4", num_frames=TEST_VIDEO_FRAMES).result
    assert all(face.crop is None for frame in plain.frames for face in frame.faces)
    assert plain.threshold == 0.5 and [t.score for t in plain.tracks] == [t.score for t in low.result.tracks]
    assert service.detect_video(data, "w.mp4", model="b4-at-0.3", num_frames=2).result.threshold == 0.3


def test_bad_videos_and_video_settings_are_refused(service: DetectionService, astronaut_video: Path) -> None:
    data = astronaut_video.read_bytes()
    with pytest.raises(InputError, match=r"^cut\.mp4: not a recognised video format"):
        service.detect_video(data[:2000], "cut.mp4")
    with pytest.raises(InputError, match=r"^empty\.mp4: the upload is empty"):
        service.detect_video(b"", "empty.mp4")
    with pytest.raises(ValueError, match="frames must be between 1 and 256"):
        service.detect_video(data, "walk.mp4", num_frames=0)
    with pytest.raises(ValueError, match="unknown track strategy 'median'"):
        service.detect_video(data, "walk.mp4", strategy="median")
    with pytest.raises(ValueError, match="between 0 and 1"):
        service.detect_video(data, "walk.mp4", threshold=-0.5)
    with pytest.raises(UnknownServedModelError, match="b4, b4-at-0.3"):
        service.detect_video(data, "walk.mp4", model="nope")
