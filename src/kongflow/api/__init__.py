"""kongflow's HTTP API (FastAPI): the jobs service for applications, with an OpenAPI schema."""

from kongflow.extras import require

require("service", "the HTTP API (kongflow.api)")

from kongflow.api.app import create_app  # noqa: E402
from kongflow.api.server import BackgroundServer  # noqa: E402

__all__ = ["BackgroundServer", "create_app"]
