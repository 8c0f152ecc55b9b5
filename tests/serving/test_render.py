"""The web app's pictures and verdict text, from arrays and hand-made results (no model, no server)."""

from __future__ import annotations

import numpy as np

from aletheia.results import FaceResult, ImageResult
from aletheia.serving.render import (
    FAKE_COLOUR,
    REAL_COLOUR,
    attention_overlay,
    draw_faces,
    shrink_for_display,
)
from aletheia.serving.service import Detection
from aletheia.serving.webapp import render_outputs, verdict_markdown


def _result(scores: list[float], threshold: float = 0.5, size: int = 400) -> ImageResult:
    faces = [
        FaceResult(
            box=np.array([40 + 150 * i, 100, 140 + 150 * i, 200], dtype=np.float32),
            keypoints=np.zeros((6, 2)),
            detection_score=0.9,
            score=s,
            crop=np.full((224, 224, 3), 128, np.uint8),
            attention=np.full((28, 28), 0.5, np.float32),
        )
        for i, s in enumerate(scores)
    ]
    return ImageResult("photo.jpg", threshold, "m.pth", faces=faces, width=size, height=size)


def test_boxes_are_coloured_by_the_call_at_the_threshold() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    drawn = draw_faces(image, _result([0.9, 0.1]))
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert not image.any(), "the input must not be drawn on"
    # The left edge of each box, halfway down, away from the label.
    assert tuple(drawn[150, 40]) == FAKE_COLOUR
    assert tuple(drawn[150, 190]) == REAL_COLOUR


def test_large_photos_are_shrunk_for_display_with_boxes_scaled() -> None:
    image = np.zeros((1000, 4000, 3), np.uint8)
    result = _result([0.9], size=4000)
    result.faces[0].box = np.array([2000, 400, 2400, 800], dtype=np.float32)
    drawn = draw_faces(image, result, max_side=1000)
    assert drawn.shape == (250, 1000, 3)
    assert tuple(drawn[150, 500]) == FAKE_COLOUR
    # Drawing on an already shrunk copy puts the boxes in the same place.
    small = shrink_for_display(image, max_side=1000)
    assert small.shape == (250, 1000, 3)
    np.testing.assert_array_equal(draw_faces(small, result, max_side=1000), drawn)
    assert shrink_for_display(image, max_side=5000) is image


def test_attention_overlay_blends_on_an_absolute_scale() -> None:
    crop = np.full((224, 224, 3), 100, np.uint8)
    flat = attention_overlay(crop, np.full((28, 28), 0.5, np.float32))
    assert flat.shape == crop.shape and flat.dtype == np.uint8
    assert (flat == flat[0, 0]).all(), "a flat map stays flat: no stretching to its own range"
    low = attention_overlay(crop, np.full((28, 28), 0.1, np.float32))
    assert not np.array_equal(low, flat), "levels are absolute, so a lower flat map looks different"
    ramp = attention_overlay(crop, np.tile(np.linspace(0, 1, 28, dtype=np.float32), (28, 1)))
    assert ramp[:, 0].mean() != ramp[:, -1].mean()
    np.testing.assert_array_equal(attention_overlay(crop, np.ones((28, 28)), alpha=0.0), crop)


def test_verdict_and_gallery_text() -> None:
    detection = Detection(np.zeros((400, 400, 3), np.uint8), _result([0.25, 0.75]))
    text = verdict_markdown(detection)
    assert "likely **fake**" in text and "0.750" in text and "0.250" in text
    _, _, gallery, as_json, kept = render_outputs(detection)
    assert [caption for _, caption in gallery] == [
        "#1 0.250 real",
        "#1 where it looked",
        "#2 0.750 fake",
        "#2 where it looked",
    ]
    assert '"label": "fake"' in as_json and kept is detection
    empty = Detection(np.zeros((10, 10, 3), np.uint8), ImageResult("blank.png", 0.5, "m.pth"))
    assert "No face found" in verdict_markdown(empty) and "blank.png" in verdict_markdown(empty)
