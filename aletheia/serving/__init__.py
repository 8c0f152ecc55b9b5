"""Web app and REST API (`aletheia serve`): the Gradio app at `/`, the REST API under `/api/v1/`, one server."""

from aletheia.serving.server import BackgroundServer, build_app, serve
from aletheia.serving.service import DetectionService, load_pipelines

__all__ = ["BackgroundServer", "DetectionService", "build_app", "load_pipelines", "serve"]
