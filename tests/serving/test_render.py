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
    timeline_image,
)
from aletheia.serving.service import Detection, VideoDetection
from aletheia.serving.webapp import render_outputs, verdict_markdown, video_verdict_markdown
from aletheia.video import FrameResult, TrackResult, VideoFace, VideoInfo, VideoResult


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


def _video(threshold: float = 0.5) -> VideoResult:
    """Two people over three sampled frames: person 0 real-looking, person 1 fake-looking; one stray face."""
    frames = []
    for i in range(3):
        faces = [
            VideoFace(np.array([10, 10, 60, 60.0]), np.zeros((6, 2)), 0.9, score=0.2, track=0),
            VideoFace(np.array([100, 10, 150, 60.0]), np.zeros((6, 2)), 0.9, score=0.8, track=1),
        ]
        faces[1].crop = np.full((224, 224, 3), 50 * i, np.uint8)
        if i == 0:
            faces[0].crop = np.zeros((224, 224, 3), np.uint8)
            faces.append(VideoFace(np.array([0, 0, 5, 5.0]), np.zeros((6, 2)), 0.8, score=0.99))
        frames.append(FrameResult(index=5 * i, time=0.5 * i, faces=faces))
    tracks = [TrackResult(0, 0.2, [0, 5, 10]), TrackResult(1, 0.8, [0, 5, 10])]
    info = VideoInfo(320, 240, 10.0, 1.5, 15, 0, "h264")
    return VideoResult("clip.mp4", threshold, "m.pth", frames, tracks, info=info)


def test_video_verdict_gallery_and_timeline() -> None:
    detection = VideoDetection(_video())
    text = video_verdict_markdown(detection)
    assert (
        "likely **fake**" in text
        and "score **0.800**; threshold 0.50" in text
        and "2 people in 3 sampled" in text
    )
    assert "| 0 | 0.200 | 3 of 3 frames | real |" in text and "| 1 | 0.800 | 3 of 3 frames | fake |" in text
    assert "1 of 2 flagged fake" in text and "model card" in text
    timeline, verdict, gallery, as_json, kept = render_outputs(detection)
    assert timeline.shape == (320, 800, 3) and timeline.dtype == np.uint8 and verdict == text
    assert [caption for _, caption in gallery] == [
        "person 0: 0.200 real",
        "person 1: 0.800 fake",
        "person 1 at 0.5 s: 0.800",
        "person 1 at 1.0 s: 0.800",
    ]
    assert '"kind": "video"' in as_json and kept is detection
    relabelled = video_verdict_markdown(VideoDetection(_video(threshold=0.9)))
    assert "likely **real**" in relabelled and "| 1 | 0.800 | 3 of 3 frames | real |" in relabelled
    near = video_verdict_markdown(
        VideoDetection(_video(threshold=0.75))
    )  # 0.8 is inside the band around 0.75
    assert "Verdict: **inconclusive**" in near and "| 1 | 0.800 | 3 of 3 frames | inconclusive |" in near
    assert not np.array_equal(timeline_image(_video(threshold=0.9)), timeline), "the threshold line moves"


def test_a_video_without_a_person_says_why() -> None:
    stray = _video()
    stray.tracks = []
    assert "faces were seen only fleetingly (7 in all)" in video_verdict_markdown(VideoDetection(stray))
    empty = VideoResult("blank.mp4", 0.5, "m.pth", [FrameResult(0, 0.0)])
    text = video_verdict_markdown(VideoDetection(empty))
    assert (
        text.startswith("### No face found")
        and "1 sampled frame of `blank.mp4` the detector found no face" in text
    )
