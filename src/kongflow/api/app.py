"""The HTTP API: jobs tested and invoked, runs read and cancelled, events sent, endpoints
registered. Every route but /health is authenticated by `Authorization: Bearer <environment
API key>`; a run, job or endpoint of another environment is answered 404, as if it did not
exist. Errors are JSON `{"error": "..."}` with a status that says whose fault it is."""

from __future__ import annotations

from fastapi import FastAPI

from kongflow.api.errors import install_error_handlers
from kongflow.api.guard import RequestGuard
from kongflow.api.routes import ROUTERS
from kongflow.service.service import JobsService


def create_app(jobs: JobsService) -> FastAPI:
    """The API over an open JobsService (whoever serves the app opens and closes it)."""
    app = FastAPI(title="kongflow", version="1", summary="Jobs, runs, events and endpoints")
    app.state.jobs = jobs
    app.add_middleware(RequestGuard, authenticate=jobs.environments.authenticate)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
