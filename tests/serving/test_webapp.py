"""The Gradio app through gradio_client, against the real server: the same calls the browser makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from aletheia.video import DEFAULT_NUM_FRAMES
from tests.records import timeless

from .conftest import ASTRONAUT, TEST_VIDEO_FRAMES, RunningServer

# The app's endpoints are undocumented (Gradio's API page is not Aletheia's API), so gradio_client does not know
# their defaults: every input is sent.
VIDEO_DEFAULTS = (DEFAULT_NUM_FRAMES, "mean_logit")


@pytest.fixture
def client(server: RunningServer) -> Client:
    """A fresh session per test: the threshold slider relabels the result kept in the session."""
    return Client(server.url + "/", verbose=False)


def _detect(client: Client, path: Path, model: str = "b4", threshold: float = 0.5) -> tuple:
    return client.predict(handle_file(str(path)), model, threshold, *VIDEO_DEFAULTS, api_name="/detect")


def _detect_video(client: Client, path: Path, threshold: float = 0.5, strategy: str = "mean_logit") -> tuple:
    return client.predict(
        handle_file(str(path)), "b4", threshold, TEST_VIDEO_FRAMES, strategy, api_name="/detect"
    )


def test_round_trip_shows_boxes_scores_crops_and_attention(client: Client, server: RunningServer) -> None:
    annotated, verdict, gallery, as_json = _detect(client, ASTRONAUT)
    expected = server.pipelines["b4"].predict(ASTRONAUT, path="astronaut.jpg")
    score = expected.faces[0].score
    assert timeless(json.loads(as_json)) == timeless(expected.to_json()), (
        "the app shows the REST/CLI JSON, named by the upload"
    )
    spread = expected.faces[0].spread
    assert (
        f"**{score:.3f}**" in verdict and f"| #1 | {score:.3f} | {spread:.2f} | {expected.label} |" in verdict
    )
    assert (
        expected.to_json()["explanation"] in verdict
        and f"[model card](/api/v1/model-card?model={expected.model})" in verdict
    )
    assert np.asarray(Image.open(annotated)).shape == (512, 512, 3)
    assert [item["caption"] for item in gallery] == [f"#1 {score:.3f} {expected.label}", "#1 where it looked"]
    crop, overlay = (np.asarray(Image.open(item["image"])) for item in gallery)
    assert crop.shape == overlay.shape == (224, 224, 3) and not np.array_equal(crop, overlay)


def test_threshold_relabels_without_rescoring(client: Client) -> None:
    _detect(client, ASTRONAUT)
    _, verdict_low, gallery_low, json_low = client.predict(0.0, api_name="/relabel")
    _, verdict_high, _, json_high = client.predict(1.0, api_name="/relabel")
    assert "likely **fake**" in verdict_low and "likely **real**" in verdict_high
    assert gallery_low[0]["caption"].endswith("fake")
    low, high = json.loads(json_low), json.loads(json_high)
    assert (low["threshold"], high["threshold"]) == (0.0, 1.0) and low["score"] == high["score"]


def test_choosing_a_model_brings_its_threshold(client: Client) -> None:
    threshold, _, verdict, _, as_json = client.predict(
        handle_file(str(ASTRONAUT)), "b4-at-0.3", *VIDEO_DEFAULTS, api_name="/change_model"
    )
    assert threshold == 0.3 and "threshold 0.30" in verdict and json.loads(as_json)["threshold"] == 0.3


def test_no_face_is_a_message_not_a_crash(client: Client, tmp_path: Path) -> None:
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(wall)
    annotated, verdict, gallery, as_json = _detect(client, wall)
    assert verdict.startswith("### No face found") and "wall.png" in verdict
    assert gallery == [] and json.loads(as_json)["label"] == "no_face" and annotated is not None


def test_bad_files_get_clear_messages(client: Client, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ASTRONAUT.read_bytes()[:4000])
    annotated, verdict, gallery, as_json = _detect(client, cut)
    assert (
        verdict.startswith("### Could not read this file")
        and "cut.jpg: corrupt or truncated image" in verdict
    )
    assert (annotated, gallery, as_json) == (None, [], None)
    renamed = tmp_path / "notes.png"
    renamed.write_text("not a picture")
    assert "notes.png: not a recognised image format" in _detect(client, renamed)[1]
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(AppError, match="Invalid file type"):  # refused by the picker's own check
        _detect(client, text)


def test_video_round_trip_shows_verdict_tracks_timeline_and_crops(
    client: Client, server: RunningServer, astronaut_video: Path
) -> None:
    timeline, verdict, gallery, as_json = _detect_video(client, astronaut_video)
    result = json.loads(as_json)
    assert (result["kind"], result["path"], len(result["frames"])) == ("video", "walk.mp4", TEST_VIDEO_FRAMES)
    expected = server.service.detect_video(
        astronaut_video.read_bytes(), "walk.mp4", num_frames=TEST_VIDEO_FRAMES
    ).result
    assert timeless(result) == timeless(expected.to_json()), (
        "the app shows the REST/CLI JSON, named by the upload"
    )
    (track,) = expected.tracks
    assert f"**{track.score:.3f}**" in verdict and "1 person in 4 sampled frames" in verdict
    assert f"| 0 | {track.score:.3f} | {len(track.frames)} of 4 frames | {expected.label} |" in verdict
    assert np.asarray(Image.open(timeline)).shape == (320, 800, 3), "the timeline plot"
    captions = [item["caption"] for item in gallery]
    assert captions[0] == f"person 0: {track.score:.3f} {expected.label}"
    assert len(captions) == min(3, len(track.frames)), "first, middle and last sighting of each person"
    assert all(c.startswith("person 0 at ") for c in captions[1:])
    assert all(np.asarray(Image.open(item["image"])).shape == (224, 224, 3) for item in gallery)


def test_threshold_relabels_a_video_without_rescoring(client: Client, astronaut_video: Path) -> None:
    _detect_video(client, astronaut_video)
    _, verdict_low, gallery_low, json_low = client.predict(0.0, api_name="/relabel")
    _, verdict_high, gallery_high, json_high = client.predict(1.0, api_name="/relabel")
    assert "likely **fake**" in verdict_low and "likely **real**" in verdict_high
    assert gallery_low[0]["caption"].endswith("fake") and gallery_high[0]["caption"].endswith("real")
    low, high = json.loads(json_low), json.loads(json_high)
    assert (low["threshold"], high["threshold"], low["label"], high["label"]) == (0.0, 1.0, "fake", "real")
    assert low["score"] == high["score"] and [t["score"] for t in low["tracks"]] == [
        t["score"] for t in high["tracks"]
    ]


def test_video_settings_rescore_a_video_and_leave_a_photo_alone(
    client: Client, astronaut_video: Path
) -> None:
    _detect_video(client, astronaut_video)
    _, _, _, as_json = client.predict(
        handle_file(str(astronaut_video)), "b4", 0.5, 2, "max", api_name="/change_frames"
    )
    assert len(json.loads(as_json)["frames"]) == 2
    _detect(client, ASTRONAUT)
    unchanged = client.predict(handle_file(str(ASTRONAUT)), "b4", 0.5, 2, "max", api_name="/change_frames")
    assert all(output == {"__type__": "update"} for output in unchanged), "a photo's result stands (skipped)"


def test_a_corrupt_video_gets_a_clear_message(client: Client, tmp_path: Path, astronaut_video: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(astronaut_video.read_bytes()[:2000])
    timeline, verdict, gallery, as_json = _detect_video(client, cut)
    assert verdict.startswith("### Could not read this file") and "cut.mp4: not a recognised video" in verdict
    assert (timeline, gallery, as_json) == (None, [], None)


def test_cleared_upload_resets_the_page(client: Client) -> None:
    assert client.predict(None, "b4", 0.5, *VIDEO_DEFAULTS, api_name="/detect") == (
        None,
        "Upload a photo or a video, or pick an example, to see the verdict.",
        [],
        None,
    )
