"""The API's routes, a router per resource."""

from kongflow.api.routes import endpoints, events, health, jobs, runs

ROUTERS = [health.router, jobs.router, runs.router, runs.v2, events.router, endpoints.router]

__all__ = ["ROUTERS"]
