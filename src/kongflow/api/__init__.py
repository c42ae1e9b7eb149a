"""kongflow's HTTP API (FastAPI): the jobs service for applications, with an OpenAPI schema."""

from kongflow.api.app import create_app
from kongflow.api.server import BackgroundServer

__all__ = ["BackgroundServer", "create_app"]
