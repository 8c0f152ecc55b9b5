"""Jobs over real HTTP (POST/GET/DELETE /api/v1/jobs) against the real server, and the queue's bounds."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aletheia.serving.jobs import JobQueue, QueueFullError
from tests.records import timeless

from .conftest import ASTRONAUT, LONG_VIDEO_FRAMES, TEST_VIDEO_FRAMES, RunningServer

ENDED = ("done", "error", "cancelled")


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def _files(name: str, data: bytes) -> dict:
    return {"file": (name, data, "application/octet-stream")}


def _submit(http: httpx.Client, name: str, data: bytes, **form: str) -> str:
    response = http.post("/api/v1/jobs", files=_files(name, data), data=form)
    assert response.status_code == 202, response.text
    assert set(response.json()) == {"id"}
    return response.json()["id"]


def _poll(http: httpx.Client, job_id: str, until, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = http.get(f"/api/v1/jobs/{job_id}")
        assert state.status_code == 200, state.text
        if until(state.json()) or time.monotonic() > deadline:
            return state.json()
        time.sleep(0.05)


def _ended(state: dict) -> bool:
    return state["status"] in ENDED


def test_a_video_job_reports_its_frames_and_gives_what_detect_gives(
    http: httpx.Client, server: RunningServer, astronaut_video: Path
) -> None:
    data = astronaut_video.read_bytes()
    job_id = _submit(http, "walk.mp4", data, frames=str(TEST_VIDEO_FRAMES), threshold="0.3")
    state = _poll(http, job_id, _ended)
    assert state["status"] == "done" and state["error"] is None, state
    assert (state["kind"], state["name"]) == ("video", "walk.mp4")
    progress = state["progress"]
    assert progress["frames_done"] == progress["frames_total"] == TEST_VIDEO_FRAMES
    assert progress["faces"] == sum(len(frame["faces"]) for frame in state["result"]["frames"]) > 0
    assert state["created"].endswith("Z") and state["started"] and state["ended"]
    direct = http.post(
        "/api/v1/detect", files=_files("walk.mp4", data), data={"frames": TEST_VIDEO_FRAMES, "threshold": 0.3}
    )
    assert timeless(state["result"]) == timeless(direct.json())
    assert list(Path(server.jobs.folder).iterdir()) == [], "the upload is deleted once the job ends"


def test_a_photo_job_gives_what_detect_gives(http: httpx.Client) -> None:
    job_id = _submit(http, "a.jpg", ASTRONAUT.read_bytes(), model="b4-at-0.3")
    state = _poll(http, job_id, _ended)
    direct = http.post(
        "/api/v1/detect", files=_files("a.jpg", ASTRONAUT.read_bytes()), data={"model": "b4-at-0.3"}
    )
    assert (state["status"], state["kind"], timeless(state["result"])) == (
        "done",
        "image",
        timeless(direct.json()),
    )
    assert state["progress"] == {
        "frames_done": None,
        "frames_total": None,
        "faces": len(direct.json()["faces"]),
    }


def test_a_bad_upload_is_refused_before_it_is_queued(http: httpx.Client, tmp_path: Path) -> None:
    text = http.post("/api/v1/jobs", files=_files("notes.txt", b"not a picture at all"))
    assert text.status_code == 415 and "not a recognised image format" in text.json()["detail"]
    model = http.post("/api/v1/jobs", files=_files("a.jpg", ASTRONAUT.read_bytes()), data={"model": "nope"})
    assert model.status_code == 422 and "unknown model 'nope'" in model.json()["detail"]
    frames = http.post("/api/v1/jobs", files=_files("a.mp4", b"x"), data={"frames": "0"})
    assert frames.status_code == 422 and "frames" in frames.json()["detail"]
    for method in (http.get, http.delete):
        missing = method("/api/v1/jobs/no-such-job")
        assert missing.status_code == 404 and "no job 'no-such-job'" in missing.json()["detail"]


def test_a_video_that_cannot_be_read_ends_in_an_error_with_a_message(
    http: httpx.Client, astronaut_video: Path
) -> None:
    job_id = _submit(http, "cut.mp4", astronaut_video.read_bytes()[:2000])
    state = _poll(http, job_id, _ended)
    assert state["status"] == "error" and state["result"] is None
    assert state["error"].startswith("cut.mp4: not a recognised video")


def test_cancelling_stops_a_running_video_at_the_next_frame(http: httpx.Client, long_video: Path) -> None:
    job_id = _submit(http, "long.mp4", long_video.read_bytes(), frames=str(LONG_VIDEO_FRAMES))
    running = _poll(http, job_id, lambda s: (s["progress"]["frames_done"] or 0) >= 2 or _ended(s))
    assert running["status"] == "running", running
    cancelled = http.delete(f"/api/v1/jobs/{job_id}")
    assert cancelled.status_code == 200
    state = _poll(http, job_id, _ended, timeout=60)
    assert state["status"] == "cancelled" and state["result"] is None, state
    assert state["progress"]["frames_done"] < LONG_VIDEO_FRAMES, "it stopped before the end"
    assert http.delete(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled", (
        "an ended job stays as it is"
    )


def test_a_running_video_job_does_not_hold_up_a_photo(http: httpx.Client, long_video: Path) -> None:
    job_id = _submit(http, "long.mp4", long_video.read_bytes(), frames=str(LONG_VIDEO_FRAMES))
    try:
        assert _poll(http, job_id, lambda s: (s["progress"]["frames_done"] or 0) >= 1 or _ended(s))[
            "status"
        ] == ("running")
        photo = http.post("/api/v1/detect", files=_files("a.jpg", ASTRONAUT.read_bytes()))
        assert photo.status_code == 200
        after = http.get(f"/api/v1/jobs/{job_id}").json()
        # The photo was answered while the video was still being scored: it did not wait for the whole video.
        assert after["status"] == "running", after
        assert after["progress"]["frames_done"] < LONG_VIDEO_FRAMES
    finally:
        http.delete(f"/api/v1/jobs/{job_id}")
        _poll(http, job_id, _ended)


def test_the_queue_is_bounded_and_forgets_ended_jobs(
    server: RunningServer, long_video: Path, tmp_path: Path
) -> None:
    queue = JobQueue(server.service, max_pending=2, ttl=0.5, folder=tmp_path / "uploads")
    try:
        data = long_video.read_bytes()
        settings = {"num_frames": LONG_VIDEO_FRAMES}
        first = queue.submit(data, "one.mp4", video=True, owner="session-a", **settings)
        second = queue.submit(data, "two.mp4", video=True, owner="session-a", **settings)
        with pytest.raises(QueueFullError, match="2 jobs queued or running"):
            queue.submit(data, "three.mp4", video=True, **settings)
        assert queue.cancel_owned("session-a") == 2
        for job in (first, second):
            queue.wait(job, poll=0.05)
            assert job.status == "cancelled"
        assert list((tmp_path / "uploads").iterdir()) == [], "uploads are deleted when their jobs end"
        time.sleep(0.6)
        assert queue.get(first.id) is None and queue.get(second.id) is None, "ended jobs expire"
        queue.submit(ASTRONAUT.read_bytes(), "a.jpg", video=False)  # room again
    finally:
        queue.close()
    assert not (tmp_path / "uploads").exists(), "closing the queue removes its folder"


def test_photos_sent_at_once_with_a_video_job_all_come_back(http: httpx.Client, long_video: Path) -> None:
    job_id = _submit(http, "long.mp4", long_video.read_bytes(), frames="16")
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: http.post("/api/v1/detect", files=_files("a.jpg", ASTRONAUT.read_bytes())), range(4)
            )
        )
    assert [a.status_code for a in answers] == [200] * 4
    assert _poll(http, job_id, _ended)["status"] == "done"
