"""The REST API over real HTTP against the server the `server` fixture runs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from aletheia.cli import main as cli_main
from aletheia.serving.api import MULTIPART_OVERHEAD_BYTES, UploadLimitMiddleware
from aletheia.video import TRACK_STRATEGIES, VideoDetector
from tests.records import timeless

from .conftest import ASTRONAUT, TEST_MAX_UPLOAD_BYTES, TEST_VIDEO_FRAMES, RunningServer

FRAMES = str(TEST_VIDEO_FRAMES)


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _post(http: httpx.Client, name: str, data: bytes, **form: str) -> httpx.Response:
    return http.post("/api/v1/detect", files={"file": (name, data, "application/octet-stream")}, data=form)


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height pixels, with no pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_and_models(http: httpx.Client) -> None:
    health = http.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json() | {"version": "x"} == {
        "status": "ok",
        "version": "x",
        "default_model": "b4",
        "models": ["b4", "b4-at-0.3"],
    }
    models = http.get("/api/v1/models").json()
    assert models["default"] == "b4"
    assert [(m["name"], m["threshold"], m["default"]) for m in models["models"]] == [
        ("b4", 0.5, True),
        ("b4-at-0.3", 0.3, False),
    ]
    assert (
        models["models"][0]["architecture"] == "EfficientNetAutoAttB4"
        and models["models"][0]["has_attention"]
    )


def test_detect_returns_the_cli_json_line(
    http: httpx.Client, b4_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    response = _post(http, "astronaut.jpg", ASTRONAUT.read_bytes())
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert cli_main(["detect", str(ASTRONAUT), "--model", str(b4_checkpoint), "--no-progress"]) == 0
    cli_line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert timeless(response.json()) == timeless(cli_line | {"path": "astronaut.jpg"})
    assert response.json()["label"] in ("fake", "real", "inconclusive") and len(response.json()["faces"]) == 1


def test_threshold_and_model_are_per_request(http: httpx.Client, server: RunningServer) -> None:
    data = ASTRONAUT.read_bytes()
    fake = _post(http, "a.jpg", data, threshold="0").json()
    real = _post(http, "a.jpg", data, threshold="1").json()
    assert (fake["label"], fake["threshold"], real["label"], real["threshold"]) == ("fake", 0.0, "real", 1.0)
    assert fake["score"] == real["score"]
    assert _post(http, "a.jpg", data, model="b4-at-0.3").json()["threshold"] == 0.3
    assert server.pipelines["b4"].threshold == 0.5, (
        "a request's threshold must not leak into the shared pipeline"
    )
    whole = _post(http, "a.jpg", data, assume_face="true").json()
    assert whole["faces"][0]["box"] == [0.0, 0.0, 512.0, 512.0]


def test_concurrent_requests_each_get_their_own_threshold(http: httpx.Client) -> None:
    data = ASTRONAUT.read_bytes()
    thresholds = ["0", "1"] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: _post(http, "a.jpg", data, threshold=t).json(), thresholds))
    assert [r["label"] for r in results] == ["fake", "real"] * 4


def test_a_photo_without_a_face_is_not_an_error(http: httpx.Client) -> None:
    response = _post(http, "wall.png", _png(np.full((256, 256, 3), 128, np.uint8)))
    assert response.status_code == 200
    body = response.json()
    assert (body["label"], body["score"], body["faces"], body["error"], body["path"]) == (
        "no_face",
        None,
        [],
        None,
        "wall.png",
    )


@pytest.mark.parametrize(
    ("name", "data", "form", "status", "message"),
    [
        (
            "notes.txt",
            b"just some text, not a photo",
            {},
            415,
            "notes.txt: not a recognised image format, nor a video",
        ),
        ("page.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", {}, 415, "not a recognised image format"),
        ("cut.jpg", ASTRONAUT.read_bytes()[:4000], {}, 422, "cut.jpg: corrupt or truncated image"),
        ("empty.jpg", b"", {}, 422, "empty.jpg: the upload is empty"),
        ("huge.png", _png_header(20_000, 20_000), {}, 413, "huge.png: the image has too many pixels"),
        ("big.png", _png_header(10_000, 10_000), {}, 413, "too many pixels"),
        ("huge.mp4", _png_header(20_000, 20_000), {}, 413, "huge.mp4: the image has too many pixels"),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"threshold": "1.5"},
            422,
            "threshold: Input should be less than or equal to 1",
        ),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"threshold": "-0.1"},
            422,
            "threshold: Input should be greater than",
        ),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"threshold": "half"},
            422,
            "threshold: Input should be a valid number",
        ),
        ("a.jpg", ASTRONAUT.read_bytes(), {"threshold": "nan"}, 422, "threshold:"),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"model": "gpt"},
            422,
            "unknown model 'gpt'; this server has: b4, b4-at-0.3",
        ),
        ("broken.mp4", b"this is not a video", {}, 422, "broken.mp4: not a recognised video format"),
        ("empty.mp4", b"", {}, 422, "empty.mp4: the upload is empty"),
        ("boxes.bin", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, {}, 422, "boxes.bin: "),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"frames": "0"},
            422,
            "frames: Input should be greater than or equal to 1",
        ),
        ("a.jpg", ASTRONAUT.read_bytes(), {"frames": "257"}, 422, "frames: Input should be less than"),
        (
            "a.jpg",
            ASTRONAUT.read_bytes(),
            {"track_strategy": "median"},
            422,
            "track_strategy: Input should be 'mean_logit', 'confident' or 'max'",
        ),
        (
            "too-big.jpg",
            b"\xff" * (TEST_MAX_UPLOAD_BYTES + 1),
            {},
            413,
            "larger than this server's limit of 1.0 MiB",
        ),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message(
    http: httpx.Client, name: str, data: bytes, form: dict, status: int, message: str
) -> None:
    response = _post(http, name, data, **form)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["detail"]


def test_missing_file_and_wrong_method(http: httpx.Client) -> None:
    response = http.post("/api/v1/detect", data={"threshold": "0.5"})
    assert (response.status_code, response.json()) == (422, {"detail": "file: Field required"})
    # Unmatched API paths fall through to the Gradio app mounted at "/", which answers 404 (not 405).
    for path in ("/api/v1/detect", "/api/v1/nothing-here"):
        assert http.get(path).status_code in (404, 405)


def test_a_body_over_the_limit_declared_up_front_is_refused_unread(http: httpx.Client) -> None:
    oversized = b"\x00" * (TEST_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES + 1)
    response = http.post(
        "/api/v1/detect", content=oversized, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(http: httpx.Client) -> None:
    """No Content-Length: the server counts bytes as they arrive and answers 413 past the limit."""

    def body():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n"
        )
        for _ in range(2 * TEST_MAX_UPLOAD_BYTES // 65536):
            yield b"\xff" * 65536
        yield b"\r\n--b--\r\n"

    response = http.post(
        "/api/v1/detect", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_the_limit_middleware_stops_reading_once_past_the_limit() -> None:
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    async def app(scope: dict, receive, send) -> None:
        while True:  # an app that would read forever
            await receive()

    middleware = UploadLimitMiddleware(app, path_prefix="/api", max_upload_bytes=10_000)
    scope = {"type": "http", "path": "/api/v1/detect", "headers": []}
    with pytest.raises(Exception, match="limit") as caught:
        asyncio.run(middleware(scope, receive, lambda message: None))
    assert getattr(caught.value, "status_code", None) == 413
    assert pulled == (10_000 + MULTIPART_OVERHEAD_BYTES) // 1000 + 1


def test_an_internal_failure_is_a_500_without_a_stack_trace(
    http: httpx.Client, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal state /home/someone")

    monkeypatch.setattr(server.service, "detect", explode)
    response = _post(http, "a.jpg", ASTRONAUT.read_bytes())
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the details"}
    assert "secret" not in response.text and "Traceback" not in response.text


def test_a_video_upload_returns_the_cli_video_json(
    http: httpx.Client, server: RunningServer, astronaut_video: Path
) -> None:
    response = _post(http, "walk.mp4", astronaut_video.read_bytes(), frames=FRAMES)
    assert response.status_code == 200, response.text
    body = response.json()
    detector = VideoDetector(server.pipelines["b4"], num_frames=TEST_VIDEO_FRAMES)
    assert timeless(body) == timeless(detector.predict(astronaut_video, path="walk.mp4").to_json())
    assert (body["kind"], body["path"], len(body["frames"]), len(body["tracks"])) == (
        "video",
        "walk.mp4",
        4,
        1,
    )
    assert body["label"] in ("fake", "real", "inconclusive") and body["threshold"] == 0.5


def test_a_video_is_told_by_its_contents_and_a_photo_wins_over_its_name(
    http: httpx.Client, astronaut_video: Path
) -> None:
    unnamed = _post(http, "upload", astronaut_video.read_bytes(), frames="2")
    assert (unnamed.status_code, unnamed.json()["kind"], unnamed.json()["path"]) == (200, "video", "upload")
    assert len(unnamed.json()["frames"]) == 2
    photo = _post(http, "photo.mp4", ASTRONAUT.read_bytes())
    assert (photo.status_code, photo.json()["kind"]) == (200, "image")


def test_a_video_threshold_and_track_strategy_are_per_request(
    http: httpx.Client, server: RunningServer, astronaut_video: Path
) -> None:
    data = astronaut_video.read_bytes()
    fake = _post(http, "walk.mp4", data, frames=FRAMES, threshold="0").json()
    real = _post(http, "walk.mp4", data, frames=FRAMES, threshold="1").json()
    assert (fake["label"], fake["threshold"], real["label"], real["threshold"]) == ("fake", 0.0, "real", 1.0)

    def scores(record: dict) -> tuple:  # the labels follow the threshold; the scores must not
        return [t["score"] for t in record["tracks"]], [
            [f["score"] for f in fr["faces"]] for fr in record["frames"]
        ]

    assert fake["score"] == real["score"] and scores(fake) == scores(real)
    assert {t["label"] for t in fake["tracks"]} == {"fake"} and {t["label"] for t in real["tracks"]} == {
        "real"
    }
    assert server.pipelines["b4"].threshold == 0.5, (
        "a request's threshold must not leak into the shared pipeline"
    )
    assert _post(http, "walk.mp4", data, frames=FRAMES, model="b4-at-0.3").json()["threshold"] == 0.3
    highest = _post(http, "walk.mp4", data, frames=FRAMES, track_strategy="max").json()
    assert highest["score"] >= fake["score"], "the most fake-looking face scores at least the mean logit"


def test_a_truncated_video_is_a_422(http: httpx.Client, astronaut_video: Path) -> None:
    data = astronaut_video.read_bytes()
    response = _post(http, "cut.mp4", data[: len(data) // 2], frames=FRAMES)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("cut.mp4: ")


def test_the_api_offers_every_track_strategy(http: httpx.Client) -> None:
    spec = http.get("/api/v1/openapi.json").json()
    form = spec["paths"]["/api/v1/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    schema = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
    assert schema["properties"]["track_strategy"]["enum"] == list(TRACK_STRATEGIES)


def test_openapi_docs_describe_the_real_response(http: httpx.Client, astronaut_video: Path) -> None:
    spec = http.get("/api/v1/openapi.json").json()
    assert {"/api/v1/detect", "/api/v1/health", "/api/v1/models"} <= set(spec["paths"])
    detect = spec["paths"]["/api/v1/detect"]["post"]
    assert {"200", "413", "415", "422"} <= set(detect["responses"])
    schemas = spec["components"]["schemas"]
    sample = _post(http, "a.jpg", ASTRONAUT.read_bytes()).json()

    # "scores" (per kind of fake) is there only for models that score kinds; the served test models do not.
    def fields(name: str) -> set[str]:
        return set(schemas[name]["properties"]) - {"scores"}

    assert fields("DetectResult") == set(sample)
    assert fields("Face") == set(sample["faces"][0])
    assert fields("Provenance") == set(sample["provenance"]) and fields("ResultWarning") == {
        "code",
        "message",
    }
    video = _post(http, "walk.mp4", astronaut_video.read_bytes(), frames="2").json()
    assert fields("VideoDetectResult") == set(video)
    assert fields("VideoFrame") == set(video["frames"][0])
    assert fields("VideoFace") == set(video["frames"][0]["faces"][0])
    assert fields("Track") == set(video["tracks"][0])
    docs = http.get("/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_tta_is_a_form_field_and_results_carry_spread_warnings_and_provenance(http: httpx.Client) -> None:
    data = ASTRONAUT.read_bytes()
    mirrored = _post(http, "a.jpg", data).json()
    plain = _post(http, "a.jpg", data, tta="none").json()
    assert (mirrored["tta"], plain["tta"]) == ("mirror", "none")
    assert isinstance(mirrored["faces"][0]["spread"], float) and plain["faces"][0]["spread"] is None
    assert "no_augmentation" in [w["code"] for w in plain["warnings"]]
    assert mirrored["label"] in ("fake", "real", "inconclusive") and mirrored["explanation"]
    low, high = mirrored["band"]
    assert low <= mirrored["threshold"] <= high
    assert mirrored["provenance"]["input_sha256"] == hashlib.sha256(data).hexdigest()
    refused = _post(http, "a.jpg", data, tta="sideways")
    assert refused.status_code == 422 and "tta" in refused.json()["detail"]


def test_model_card_is_served_for_models_that_keep_one(http: httpx.Client) -> None:
    missing = http.get("/api/v1/model-card", params={"model": "b4"})
    assert missing.status_code == 404 and "no model card" in missing.json()["detail"]
    assert http.get("/api/v1/model-card", params={"model": "nosuch"}).status_code == 404


def test_the_bundled_models_card_is_served_and_described(tmp_path: Path) -> None:
    from fastapi import FastAPI

    from aletheia.models.loader import DEFAULT_MODEL
    from aletheia.pipeline import DeepfakeDetectorPipeline
    from aletheia.serving import BackgroundServer
    from aletheia.serving.api import build_api_router
    from aletheia.serving.jobs import JobQueue
    from aletheia.serving.service import DetectionService

    if not DEFAULT_MODEL.is_file():
        pytest.skip("no default model bundled in this checkout")
    pipeline = DeepfakeDetectorPipeline()
    # The REST API alone: a second Gradio app would clean the shared upload cache up when it stops.
    app = FastAPI()
    service = DetectionService({pipeline.model_label: pipeline})
    jobs = JobQueue(service, folder=tmp_path / "jobs")
    app.include_router(build_api_router(service, jobs))
    try:
        with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            card = client.get("/api/v1/model-card", params={"model": pipeline.model_label})
            models = client.get("/api/v1/models").json()["models"]
    finally:
        jobs.close()
    assert card.status_code == 200 and card.text == (DEFAULT_MODEL.parent / "MODEL_CARD.md").read_text()
    assert models[0]["sha256"] == pipeline.model_sha256 and models[0]["tta"] == "mirror"
    assert models[0]["band"][0] <= models[0]["threshold"] <= models[0]["band"][1]
