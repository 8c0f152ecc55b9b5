"""One real server for the serving tests: the FastAPI app with the Gradio app mounted, on 127.0.0.1:<free port>."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO_ROOT / "examples" / "astronaut.jpg"
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Small enough that the 413 tests stay quick, larger than every photo and video the tests send.
TEST_MAX_UPLOAD_BYTES = 1024 * 1024
# Frames sampled from test videos: enough for a track (two sightings), few enough to stay quick.
TEST_VIDEO_FRAMES = 4
LONG_VIDEO_FRAMES = 256


@dataclass
class RunningServer:
    url: str
    service: object  # aletheia.serving.service.DetectionService
    pipelines: dict
    jobs: object = None  # aletheia.serving.jobs.JobQueue


@pytest.fixture(scope="session")
def served_pipelines(b4_checkpoint: Path) -> dict:
    """Two selectable models: the checkpoint at its own threshold (the default, 0.5) and at 0.3."""
    from aletheia.pipeline import DeepfakeDetectorPipeline

    return {
        "b4": DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint),
        "b4-at-0.3": DeepfakeDetectorPipeline(model_checkpoint=b4_checkpoint, threshold=0.3),
    }


@pytest.fixture(scope="session")
def astronaut_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s clip (8 frames at 4 fps) of the astronaut moving right: one person, one track."""
    from tests.test_video import _moving_astronaut, write_video

    path = tmp_path_factory.mktemp("videos") / "walk.mp4"
    write_video(path, _moving_astronaut(count=8), fps=4)
    return path


@pytest.fixture(scope="session")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 s clip (256 frames at 16 fps) of the astronaut moving right: long enough to watch a job's progress."""
    from tests.test_video import _moving_astronaut, write_video

    path = tmp_path_factory.mktemp("videos") / "long-walk.mp4"
    write_video(path, _moving_astronaut(count=LONG_VIDEO_FRAMES), fps=16)
    return path


@pytest.fixture(scope="session")
def server(served_pipelines: dict) -> Iterator[RunningServer]:
    from aletheia.serving import BackgroundServer, build_app

    app = build_app(served_pipelines, max_upload_bytes=TEST_MAX_UPLOAD_BYTES, examples=[ASTRONAUT])
    with BackgroundServer(app) as url:
        yield RunningServer(url, app.state.detection_service, served_pipelines, app.state.jobs)
