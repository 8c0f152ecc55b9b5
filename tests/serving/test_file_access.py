"""The Gradio app reads only files uploaded to this server: a server-side path sent through its API is refused,
with a message that tells neither where the server runs nor whether the path exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from aletheia.io import InputError
from aletheia.serving.uploads import NOT_UPLOADED, read_upload, upload_folder

from .conftest import ASTRONAUT, RunningServer


@pytest.fixture(scope="module")
def http(server: RunningServer) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def _call_detect(http: httpx.Client, path: str) -> tuple[int, str]:
    """POST the app's detect event over plain HTTP, as the exploit does; (status, everything that came back)."""
    posted = http.post("/gradio_api/call/detect", json={"data": [_file(path), "b4", 0.5, 4, "mean_logit"]})
    if posted.status_code != 200:
        return posted.status_code, posted.text
    streamed = http.get(f"/gradio_api/call/detect/{posted.json()['event_id']}")
    return posted.status_code, streamed.text


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A picture on the server, outside Gradio's upload folder."""
    path = tmp_path / "secret.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(path)
    return path


def test_a_server_side_path_is_refused_and_no_image_comes_back(http: httpx.Client, secret: Path) -> None:
    status, text = _call_detect(http, str(secret))
    assert "event: complete" not in text and "image.png" not in text, (
        "no annotated image of the server's file"
    )
    assert status == 403 and NOT_UPLOADED in json.loads(text)["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "missing.png",  # relative: would resolve against the server's working folder
        "examples/astronaut.jpg",  # relative and present in the working folder
        "/etc/hostname",
        "{upload}/../../{secret}",  # climbs out of the upload folder
        "http://127.0.0.1:1/x.png",  # a URL the server would fetch
    ],
)
def test_refusals_reveal_neither_the_working_folder_nor_existence(
    http: httpx.Client, secret: Path, path: str
) -> None:
    path = path.format(upload=upload_folder(), secret=secret)
    status, text = _call_detect(http, path)
    _, missing_text = _call_detect(http, str(secret.with_name("no-such-file.png")))
    assert status == 403 and text == missing_text, "the same answer whether or not the file exists"
    assert os.getcwd() not in text and str(secret.parent) not in text


def test_gradio_does_not_serve_the_file_either(http: httpx.Client, secret: Path) -> None:
    assert http.get(f"/gradio_api/file={secret}").status_code == 403


def test_an_upload_through_the_api_is_analysed(http: httpx.Client) -> None:
    uploaded = http.post("/gradio_api/upload", files={"files": ("astronaut.jpg", ASTRONAUT.read_bytes())})
    (path,) = uploaded.json()
    status, text = _call_detect(http, path)
    assert status == 200 and "event: complete" in text and "Verdict" in text


def test_an_upload_through_gradio_client_still_works(server: RunningServer) -> None:
    client = Client(server.url + "/", verbose=False)
    annotated, verdict, _, as_json = client.predict(
        handle_file(str(ASTRONAUT)), "b4", 0.5, 32, "mean_logit", api_name="/detect"
    )
    assert verdict.startswith("### Verdict") and json.loads(as_json)["path"] == "astronaut.jpg"
    assert np.asarray(Image.open(annotated)).shape == (512, 512, 3)


def test_the_app_itself_reads_only_the_upload_folder(secret: Path, tmp_path: Path) -> None:
    """Defence in depth: the event handler's own check, for when a request gets past the middleware."""
    for path in (secret, tmp_path / "missing.png", Path(upload_folder()) / ".." / secret.name):
        with pytest.raises(InputError) as refused:
            read_upload(str(path))
        assert str(refused.value) == NOT_UPLOADED
    inside = Path(upload_folder()) / "aletheia-test" / "a.jpg"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(ASTRONAUT.read_bytes())
    try:
        assert read_upload(str(inside)) == ASTRONAUT.read_bytes()
    finally:
        inside.unlink()
        inside.parent.rmdir()
