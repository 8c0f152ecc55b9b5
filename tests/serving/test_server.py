"""`serve` itself, as `aletheia serve` will run it: a separate process that loads a model spec and listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import ASTRONAUT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_loads_the_model_and_answers_both_faces(b4_checkpoint: Path) -> None:
    port = _free_port()
    code = f"from aletheia.serving import serve; serve([{str(b4_checkpoint)!r}], port={port}, log_level='warning')"
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "the server exited"
            try:
                health = httpx.get(f"{url}/api/v1/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert health.json()["models"] == [b4_checkpoint.name]
        files = {"file": ("astronaut.jpg", ASTRONAUT.read_bytes())}
        result = httpx.post(f"{url}/api/v1/detect", files=files, timeout=60).json()
        assert result["path"] == "astronaut.jpg" and result["model"] == b4_checkpoint.name
        page = httpx.get(f"{url}/", timeout=10)
        config = httpx.get(f"{url}/config", timeout=10)
        assert page.status_code == 200 and config.json()["title"] == "Aletheia deepfake detector"
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert f"web app at http://127.0.0.1:{port}/" in out
