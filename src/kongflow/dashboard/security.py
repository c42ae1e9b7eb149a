"""Who may see the dashboard and act on it: open (kongflow dev, on loopback) or behind a login
(an admin token, or an environment's API key for that environment's jobs-service pages), a
session in a signed cookie, a CSRF token on every action, and a read-only mode."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request

#: The largest form the dashboard takes (a test payload included).
MAX_FORM_BYTES = 256 * 1024

ADMIN = "admin"


@dataclass(frozen=True)
class DashboardOptions:
    """`login`: require a login (else everyone is admin: only for a dashboard on loopback).
    `admin_token`: the token that logs in as admin. `read_only`: no actions at all.
    `secret`: signs session cookies (random per process if unset: sessions end on restart).
    `https_only`: session cookies only over HTTPS."""

    login: bool = False
    admin_token: str | None = None
    read_only: bool = False
    secret: str | None = None
    https_only: bool = False

    def __post_init__(self) -> None:
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("a dashboard admin token has at least 16 characters")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the admin (everything), or one environment (its jobs-service pages)."""

    admin: bool
    environment_id: str | None = None


def viewer(request: Request) -> Viewer | None:
    options: DashboardOptions = request.app.state.options
    if not options.login:
        return Viewer(admin=True)
    who = request.session.get("who")
    if who == ADMIN:
        return Viewer(admin=True)
    if isinstance(who, str) and who.startswith("env:"):
        return Viewer(admin=False, environment_id=who.removeprefix("env:"))
    return None


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def form(request: Request, *, action: bool = True) -> dict[str, str]:
    """The posted form (application/x-www-form-urlencoded), its CSRF token checked, or a 403.
    A read-only dashboard takes no actions (logging in and out is not one)."""
    options: DashboardOptions = request.app.state.options
    if action and options.read_only:
        raise HTTPException(403, "this dashboard is read-only")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"a form is at most {MAX_FORM_BYTES // 1024} KiB")
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the form is not valid UTF-8 form data") from None
    expected = request.session.get("csrf")
    given = fields.get("csrf", "")
    if not isinstance(expected, str) or not hmac.compare_digest(given, expected):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
    return fields


def log_in(request: Request, who: str) -> None:
    request.session.clear()
    request.session["who"] = who
    csrf_token(request)


def token_matches(options: DashboardOptions, token: str) -> bool:
    expected = options.admin_token
    return expected is not None and hmac.compare_digest(token.encode(), expected.encode())


def session_settings(options: DashboardOptions) -> dict[str, Any]:
    return {
        "secret_key": options.secret or secrets.token_urlsafe(32),
        "session_cookie": "kongflow_dashboard",
        "same_site": "strict",
        "https_only": options.https_only,
        "max_age": 12 * 3600,
    }
