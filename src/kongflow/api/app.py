"""The HTTP API: jobs tested and invoked, runs read and cancelled, events sent, endpoints
registered. Every route but /health is authenticated by `Authorization: Bearer <environment
API key>`; a run, job or endpoint of another environment is answered 404, as if it did not
exist. Errors are JSON `{"error": "..."}` with a status that says whose fault it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from kongflow.api.errors import install_error_handlers
from kongflow.api.guard import RequestGuard
from kongflow.api.routes import ROUTERS
from kongflow.service.service import JobsService

if TYPE_CHECKING:
    from kongflow.dashboard import DashboardOptions

DASHBOARD_PATH = "/dashboard"


def create_app(jobs: JobsService, dashboard: DashboardOptions | None = None) -> FastAPI:
    """The API over an open JobsService (whoever serves the app opens and closes it), with
    the dashboard at /dashboard when `dashboard` says how to guard it."""
    app = FastAPI(title="kongflow", version="1", summary="Jobs, runs, events and endpoints")
    app.state.jobs = jobs
    app.add_middleware(RequestGuard, authenticate=jobs.environments.authenticate)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if dashboard is not None:
        from kongflow.dashboard import create_dashboard

        app.mount(DASHBOARD_PATH, create_dashboard(jobs.client, jobs, dashboard))
    return app
