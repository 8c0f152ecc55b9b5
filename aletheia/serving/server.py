"""One server for both faces of the service: the REST API under /api/v1 and the Gradio app at /.

`build_app` makes the ASGI app (tests serve it on an ephemeral port); `serve` loads the models and runs uvicorn.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

if TYPE_CHECKING:
    import uvicorn

import aletheia
from aletheia.pipeline import DeepfakeDetectorPipeline
from aletheia.serving.api import (
    API_PREFIX,
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_UPLOAD_BYTES,
    BodyTimeoutMiddleware,
    UploadLimitMiddleware,
    build_api_router,
    install_error_handlers,
)
from aletheia.serving.docs import install_offline_docs
from aletheia.serving.jobs import JobQueue
from aletheia.serving.service import DetectionService, load_pipelines
from aletheia.serving.uploads import UploadsOnlyMiddleware

# A source checkout ships public-domain example photos here; an installed wheel has none and shows no examples.
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# Connections idle between requests close after this many seconds (stalled bodies: BodyTimeoutMiddleware).
KEEP_ALIVE_SECONDS = 5
# Beyond this many open connections (or running requests) uvicorn answers 503 rather than run out of descriptors.
MAX_CONNECTIONS = 512


def default_examples() -> list[Path]:
    if not REPO_EXAMPLES.is_dir():
        return []
    return sorted(p for p in REPO_EXAMPLES.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def build_app(
    pipelines: Mapping[str, DeepfakeDetectorPipeline] | Sequence[str],
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    examples: Sequence[str | Path] | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
) -> FastAPI:
    """The FastAPI app with the REST API and the Gradio app mounted on it.

    `pipelines`: name -> loaded pipeline (the first is the default), or model specs to load (see load_pipelines;
    an empty list means the bundled default model).
    `examples`: photos offered in the web app (default: the repository's examples/ folder, when present).
    `body_timeout`: seconds a request body may send nothing before it is given up (408).
    """
    # Set before gradio is imported: a detector's server should not report usage to anyone.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from aletheia.serving.webapp import build_demo

    if not isinstance(pipelines, Mapping):
        pipelines = load_pipelines(list(pipelines))
    service = DetectionService(pipelines)
    jobs = JobQueue(service)
    app = FastAPI(
        title="Aletheia deepfake detector",
        version=aletheia.__version__,
        description="Scores every face in a photo, or every person (face track) in a video, with its probability "
        "of being fake. The web app is at `/`.",
        docs_url=None,  # served from local files by install_offline_docs, not from a CDN
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.detection_service = service  # for embedding apps and tests
    app.state.jobs = jobs
    install_error_handlers(app)
    install_offline_docs(app, API_PREFIX)
    app.include_router(build_api_router(service, jobs, max_upload_bytes))
    app.add_middleware(UploadLimitMiddleware, path_prefix=API_PREFIX, max_upload_bytes=max_upload_bytes)

    demo = build_demo(service, default_examples() if examples is None else examples, jobs=jobs)
    # One inference at a time per event; more users wait in the queue instead of racing for the two CPU cores.
    demo.queue(default_concurrency_limit=1, max_size=64)
    # System fonts only: the default theme would fetch Google Fonts, which offline machines cannot reach.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        max_file_size=max_upload_bytes,
        footer_links=[],  # Gradio's API page is not Aletheia's API: the app links to /api/v1/docs instead
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        theme=theme,
        show_error=True,
    )
    # Gradio checks that file inputs are uploads only once an app has launched (processing_utils._check_allowed),
    # and a mounted app never does: switch its check on, and put ours in front of it (see uploads.py).
    demo.has_launched = True
    app.add_middleware(UploadsOnlyMiddleware, exempt_prefix=API_PREFIX)
    app.add_middleware(BodyTimeoutMiddleware, timeout=body_timeout)
    return app


def uvicorn_config(app: FastAPI, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's settings for this server, with its limits on idle connections and connection count."""
    import uvicorn

    kwargs = {"timeout_keep_alive": KEEP_ALIVE_SECONDS, "limit_concurrency": MAX_CONNECTIONS} | kwargs
    return uvicorn.Config(app, **kwargs)


def serve(
    models: Mapping[str, DeepfakeDetectorPipeline] | Sequence[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    arch: str | None = None,
    device: str = "cpu",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Load the models once (none named: the bundled default) and serve until interrupted.

    Loader errors (CheckpointError, UnknownModelError, ValueError) propagate with their messages; a port that
    cannot be listened on raises OSError (see `listen`) before anything is printed. `sock`: one `listen` made.
    """
    import uvicorn

    sock = sock or listen(host, port)
    if not isinstance(models, Mapping):
        models = load_pipelines(list(models), arch=arch, device=device)
    app = build_app(models, max_upload_bytes=max_upload_bytes)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    print(
        f"Aletheia: web app at http://{shown}:{port}/  REST API docs at http://{shown}:{port}{API_PREFIX}/docs"
    )
    uvicorn.Server(uvicorn_config(app, log_level=log_level)).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, for uvicorn to serve on. OSError with a plain message when the port is taken
    or the address is not this machine's."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"port {port} on {host} is already in use (another server?); "
                                     "stop it or choose another port with --port") from exc  # fmt: skip
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class BackgroundServer:
    """Serves an ASGI app from a daemon thread, for tests, tools and notebooks: `with BackgroundServer(app) as url:`.

    `port=0` takes a free ephemeral port; the socket is bound before the thread starts, so the URL is right at once.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="aletheia-server", daemon=True
        )

    def start(self, timeout: float = 60.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self.url

    def stop(self, grace: float = 1.0, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(grace)
        if self._thread.is_alive():
            # Clients such as gradio_client keep streams open; do not wait on them for ever.
            self._server.force_exit = True
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
