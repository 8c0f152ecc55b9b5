"""Hostile uploads over real HTTP: decoder failures are 4xx (never 500), photos decode under a memory budget,
and a stalled upload is given up and its connection closed."""

from __future__ import annotations

import io
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from aletheia.io import load_image_within
from aletheia.serving.service import DECODE_PIXELS
from tests.test_hostile_inputs import corrupt_avif, truncated_qoi

from .conftest import ASTRONAUT, RunningServer


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _post(http: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return http.post("/api/v1/detect", files={"file": (name, data, "application/octet-stream")})


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _large_canvas(width: int = 6000, height: int = 4500) -> Image.Image:
    """The astronaut, twice its size, on a flat canvas of more pixels than the server decodes in full."""
    canvas = Image.new("RGB", (width, height), (90, 90, 90))
    canvas.paste(Image.open(ASTRONAUT).resize((1024, 1024)), (2400, 1500))
    return canvas


@pytest.mark.parametrize(
    "name, make",
    [("cut.qoi", truncated_qoi), ("bad.avif", corrupt_avif)],
    ids=["truncated QOI", "corrupt AVIF"],
)
def test_a_decoder_crash_is_a_422(http: httpx.Client, name: str, make) -> None:
    response = _post(http, name, make())
    assert response.status_code == 422 and "corrupt or truncated image" in response.json()["detail"]


def test_an_avif_photo_is_scored_as_a_photo(http: httpx.Client) -> None:
    response = _post(http, "astronaut.avif", _encoded(Image.open(ASTRONAUT), "AVIF"))
    assert response.status_code == 200 and response.json()["kind"] == "image"


def test_a_large_jpeg_is_scored_at_reduced_size_in_original_pixels(
    http: httpx.Client, server: RunningServer
) -> None:
    data = _encoded(_large_canvas(), "JPEG", quality=70)
    reduced, scale = load_image_within(data, DECODE_PIXELS)
    assert scale == 2 and reduced.shape == (2250, 3000, 3)
    response = _post(http, "large.jpg", data)
    assert response.status_code == 200
    (face,) = response.json()["faces"]
    (expected,) = server.pipelines["b4"].predict(reduced).faces
    np.testing.assert_allclose(face["box"], expected.box * 2, atol=0.2)
    x0, y0, x1, y1 = face["box"]
    assert 2400 < x0 < x1 < 3424 and 1500 < y0 < y1 < 2524, "the face, in the uploaded photo's own pixels"


def test_a_large_png_is_refused_before_decoding(http: httpx.Client) -> None:
    response = _post(http, "large.png", _encoded(Image.new("RGB", (6000, 4500)), "PNG"))
    assert response.status_code == 413 and "decoding limit" in response.json()["detail"]


MULTIPART = "Content-Type: multipart/form-data; boundary=b\r\n"
# The start of a well-formed body of each kind, so that the server waits for the rest.
MULTIPART_START = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n\xff\xd8'


def _stall(url: str, path: str, headers: str, start: bytes) -> tuple[float, bytes]:
    """Send a request's headers and the first bytes of its body, then nothing: (seconds until closed, answer)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 500000\r\n\r\n"
        sock.sendall(head.encode() + start)
        started, answer = time.monotonic(), b""
        while chunk := sock.recv(65536):
            answer += chunk
        return time.monotonic() - started, answer


@pytest.fixture(scope="module")
def impatient_server(served_pipelines: dict):
    from aletheia.serving import BackgroundServer, build_app

    with BackgroundServer(build_app(served_pipelines, examples=[], body_timeout=1.0)) as url:
        yield url


@pytest.mark.parametrize(
    "path, headers, start",
    [
        ("/api/v1/detect", MULTIPART, MULTIPART_START),
        ("/gradio_api/upload", MULTIPART, MULTIPART_START.replace(b"file", b"files", 1)),
        ("/gradio_api/call/detect", "Content-Type: application/json\r\n", b'{"data": ['),
    ],
)
def test_a_stalled_upload_is_given_up_and_closed(
    impatient_server: str, path: str, headers: str, start: bytes
) -> None:
    seconds, answer = _stall(impatient_server, path, headers, start)
    assert seconds < 3, "closed soon after the body timeout, not held open"
    assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
