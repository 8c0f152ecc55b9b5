"""The web app reads only files that Gradio received as uploads for this server.

Gradio's API takes file inputs as `{"path": ..., "meta": {"_type": "gradio.FileData"}}`, and a mounted app (never
launched) skips Gradio's own check that the path is an upload, so without these guards any client could have the
server read, score and send back any image or video it can open. Two layers refuse every other path:
`UploadsOnlyMiddleware` before Gradio sees the request (so nothing is copied into its cache either), and
`read_upload` in the event handler itself. Both answer with one fixed message, whatever the path: it tells neither
where the server runs nor whether a file exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aletheia.io import InputError

NOT_UPLOADED = (
    "only files uploaded to this server can be analysed: upload the file first (the web page does; API clients "
    "POST it to /gradio_api/upload) and send the path that returns"
)
GONE = "the upload is no longer on the server (uploads are kept for an hour); upload it again"
# Gradio's JSON requests carry settings and file references, never file contents; larger is not a real client.
MAX_JSON_BODY_BYTES = 1024 * 1024


def upload_folder() -> str:
    """Where Gradio keeps uploads (GRADIO_TEMP_DIR, else <temp>/gradio), symbolic links resolved."""
    from gradio.utils import get_upload_folder

    return os.path.realpath(get_upload_folder())


def is_uploaded(path: str) -> bool:
    """Whether `path`, with `..` and symbolic links resolved, names something inside the upload folder."""
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):  # NUL bytes, loops
        return False
    folder = upload_folder()
    return real != folder and real.startswith(folder + os.sep)


def read_upload(path: str) -> bytes:
    """The bytes of an upload; InputError(NOT_UPLOADED) for any other path, existing or not."""
    if not is_uploaded(path):
        raise InputError(NOT_UPLOADED)
    try:
        return Path(path).read_bytes()
    except OSError as exc:  # removed by the cache clean-up, or never there
        raise InputError(GONE) from exc


def _file_paths(value: Any) -> Iterator[str]:
    """Every `path` of a file reference (a dict with a string "path", as Gradio's clients send) inside JSON."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        for item in value.values():
            yield from _file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _file_paths(item)


def foreign_paths(body: bytes) -> list[str]:
    """The file paths in a JSON request body that are not uploads (URLs included: the server would fetch them)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []  # not JSON: Gradio refuses it on its own
    return [path for path in _file_paths(data) if not is_uploaded(path)]


class UploadsOnlyMiddleware:
    """Refuses (403, NOT_UPLOADED) any JSON request outside `exempt_prefix` that names a file other than an upload.

    The body is read whole (at most MAX_JSON_BODY_BYTES, else 413), checked, and handed on unchanged. Multipart
    bodies pass: they bring files to the server, into the upload folder, and never name one on it.
    """

    def __init__(self, app: ASGIApp, *, exempt_prefix: str) -> None:
        self.app = app
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"].startswith(self.exempt_prefix)
            or dict(scope["headers"]).get(b"content-type", b"").startswith(b"multipart/")
        ):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > MAX_JSON_BODY_BYTES:
                response = JSONResponse({"detail": "the request body is too large"}, status_code=413)
                await response(scope, receive, send)
                return
        body = b"".join(chunks)
        if foreign_paths(body):
            await JSONResponse({"detail": NOT_UPLOADED}, status_code=403)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
