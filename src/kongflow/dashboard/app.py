"""The dashboard assembled: server-rendered pages (Jinja2, every value escaped) with htmx, vendored
in `static/`, refreshing their live parts in place; nothing is fetched from elsewhere. It needs
only the engine's tables; the jobs service's pages appear when a JobsService is given."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kongflow.dashboard.queries import COUNT_CAP, EngineReads, ServiceReads, age
from kongflow.dashboard.security import DashboardOptions, Viewer, csrf_token, session_settings
from kongflow.dashboard.security import viewer as current_viewer
from kongflow.engine.client import Client

STATIC = Path(__file__).with_name("static")
Page = Callable[[Request], Awaitable[Response]]


def _pretty(value: Any) -> str:
    """JSON for a <pre> block (escaped by the template like any other value)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


_TEMPLATES = Environment(
    loader=PackageLoader("kongflow.dashboard", "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["pretty"] = _pretty
_TEMPLATES.filters["count"] = lambda n: f"{n:,}+" if n >= COUNT_CAP else f"{n:,}"
_TEMPLATES.filters["when"] = _when


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    now = datetime.now(UTC)
    who = current_viewer(request)
    html = _TEMPLATES.get_template(template).render(
        request=request,
        root=request.scope.get("root_path", ""),
        csrf=csrf_token(request),
        viewer=who,
        service=request.app.state.jobs is not None,
        read_only=request.app.state.options.read_only,
        now=now,
        age=lambda since: age(since, now),
        **context,
    )
    return HTMLResponse(html, status)


def query_filter(
    request: Request, max_length: int, choice: str, choices: tuple[str, ...]
) -> tuple[dict[str, str | None], str | None]:
    """A list page's filter from its query string (empty values as None), and the value of
    its `choice` parameter, which must be one of `choices`; a 400 page says what is wrong."""
    query = request.query_params
    for name, value in query.items():
        if len(value) > max_length:
            raise HTTPException(400, f"the filter {name!r} is over {max_length} characters")
    values = {name: (value.strip() or None) for name, value in query.items()}
    chosen = values.get(choice)
    if chosen is not None and chosen not in choices:
        raise HTTPException(400, f"unknown {choice} {chosen!r}: one of {', '.join(choices)}")
    return values, chosen


def url(request: Request, path: str) -> str:
    return f"{request.scope.get('root_path', '')}{path}"


def guarded(page: Page, *, admin: bool = True) -> Page:
    """A page for a logged-in viewer (the admin, unless `admin` is False); others go to the
    login page, or get a 403 for what their login does not cover."""

    async def checked(request: Request) -> Response:
        who = current_viewer(request)
        if who is None:
            return RedirectResponse(url(request, "/login"), 303)
        if admin and not who.admin:
            raise HTTPException(403, "this page needs the dashboard's admin login")
        request.state.viewer = who
        return await page(request)

    return checked


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return render(request, "error.html", exc.status_code, message=exc.detail)


#: Scripts only from the dashboard itself, no framing (clickjacking), no other origins.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer of the dashboard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def create_dashboard(
    client: Client, jobs: Any = None, options: DashboardOptions | None = None
) -> Starlette:
    """The dashboard over an open engine client (and, optionally, an open JobsService), to
    be mounted (e.g. at /dashboard) or served on its own."""
    from kongflow.dashboard.pages import auth, engine, service

    options = options or DashboardOptions()
    routes: list[Route | Mount] = [
        *auth.routes(),
        *engine.routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if jobs is not None:
        routes[0:0] = service.routes()
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, **session_settings(options)),
        ],
        exception_handlers={HTTPException: _error_page},
    )
    app.state.options = options
    app.state.engine = EngineReads(client)
    app.state.service = ServiceReads(client) if jobs is not None else None
    app.state.client = client
    app.state.jobs = jobs
    return app


def viewer_of(request: Request) -> Viewer:
    who: Viewer = request.state.viewer
    return who
