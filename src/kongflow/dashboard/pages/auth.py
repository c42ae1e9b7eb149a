"""Logging in and out: the admin token, or an environment's API key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kongflow.dashboard.app import render, url
from kongflow.dashboard.security import ADMIN, DashboardOptions, form, log_in, token_matches


async def login_page(request: Request) -> Response:
    return render(request, "login.html", error=None)


async def login(request: Request) -> Response:
    options: DashboardOptions = request.app.state.options
    token = (await form(request, action=False)).get("token", "").strip()
    if token and token_matches(options, token):
        log_in(request, ADMIN)
        return RedirectResponse(url(request, "/"), 303)
    jobs = request.app.state.jobs
    environment = await jobs.environments.authenticate(token) if jobs and token else None
    if environment is not None:
        log_in(request, f"env:{environment.id}")
        return RedirectResponse(url(request, "/runs"), 303)
    error = "that is neither the dashboard's admin token nor an environment's API key"
    return render(request, "login.html", 401, error=error)


async def logout(request: Request) -> Response:
    await form(request, action=False)
    request.session.clear()
    return RedirectResponse(url(request, "/login"), 303)


def routes() -> list[Route]:
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
