"""The API's routes, a router per resource."""

from kongflow.api.routes import endpoints, events, health, jobs, runs, store

ROUTERS = [
    health.router,
    jobs.router,
    runs.router,
    runs.v2,
    events.router,
    endpoints.router,
    store.router,
]

__all__ = ["ROUTERS"]
