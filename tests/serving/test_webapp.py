"""The Gradio app through gradio_client, against the real server: the same calls the browser makes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from .conftest import ASTRONAUT, RunningServer


@pytest.fixture
def client(server: RunningServer) -> Client:
    """A fresh session per test: the threshold slider relabels the result kept in the session."""
    return Client(server.url + "/", verbose=False)


def _detect(client: Client, path: Path, model: str = "b4", threshold: float = 0.5) -> tuple:
    return client.predict(handle_file(str(path)), model, threshold, api_name="/detect")


def test_round_trip_shows_boxes_scores_crops_and_attention(client: Client, server: RunningServer) -> None:
    annotated, verdict, gallery, as_json = _detect(client, ASTRONAUT)
    expected = server.pipelines["b4"].predict(ASTRONAUT, path="astronaut.jpg")
    score = expected.faces[0].score
    assert json.loads(as_json) == expected.to_json(), "the app shows the REST/CLI JSON, named by the upload"
    assert f"**{score:.3f}**" in verdict and f"| #1 | {score:.3f} | {expected.label} |" in verdict
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
        handle_file(str(ASTRONAUT)), "b4-at-0.3", api_name="/change_model"
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


def test_cleared_upload_resets_the_page(client: Client) -> None:
    assert client.predict(None, "b4", 0.5, api_name="/detect") == (
        None,
        "Upload a photo, or pick an example, to see the verdict.",
        [],
        None,
    )
