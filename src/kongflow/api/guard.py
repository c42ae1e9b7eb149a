"""What every API request passes before a route sees it: its API key is checked before its body
is read (an unauthenticated client cannot make the server read megabytes), and its body is read
in full, counting the bytes actually received (chunked bodies included), refused over
`MAX_BODY_BYTES` with 413, and refused with 400 if it is JSON nested deeper than
`MAX_JSON_DEPTH` or malformed. Plain ASGI, so it costs nothing to requests it does not
concern.

Every request waits for a database connection at most `DATABASE_WAIT`, its key's lookup
included: whether the key was looked up or remembered (`EnvironmentService.authenticate`), a
database gone away is answered 503 at once rather than after the pool's own timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kongflow.engine.pool import CONNECTION_WAIT
from kongflow.service.environments import Environment

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
API_PREFIX = "/api/"
RETRY_AFTER_SECONDS = 2
# How long a request may wait for the database (a connection, its key's lookup): past this the
# database is down (or hopelessly overloaded) and the client is told to retry, rather than kept
# waiting for the pool's own timeout.
DATABASE_WAIT = 2.0

Authenticate = Callable[[str], Awaitable[Environment | None]]


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


def unauthorized(message: str) -> JSONResponse:
    return error(401, message, {"WWW-Authenticate": "Bearer"})


def database_unavailable() -> JSONResponse:
    return error(
        503,
        "the database is unavailable; retry shortly",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def bearer_key(authorization: str | None) -> str | None:
    """The key of `Authorization: Bearer <key>`; None for any other scheme or none."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


class RequestGuard:
    """Authenticates /api/ requests from their headers, then reads and checks their body."""

    def __init__(self, app: ASGIApp, authenticate: Authenticate) -> None:
        self.app = app
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        waiting = CONNECTION_WAIT.set(DATABASE_WAIT)
        try:
            await self._guarded(scope, receive, send)
        finally:
            CONNECTION_WAIT.reset(waiting)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = await self._authenticate(scope, headers.get("authorization"))
        if refusal is None:
            refusal = _declared_length_refusal(headers)
        if refusal is None:
            body, refusal = await _read_body(receive)
        if refusal is None:
            refusal = _json_refusal(body, headers.get("content-type", ""))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope, authorization: str | None) -> JSONResponse | None:
        key = bearer_key(authorization)
        if key is None:
            return unauthorized(
                "missing API key: send 'Authorization: Bearer <environment API key>'"
            )
        try:
            async with asyncio.timeout(DATABASE_WAIT):
                environment = await self.authenticate(key)
        except (psycopg.OperationalError, PoolTimeout, TimeoutError):
            return database_unavailable()
        if environment is None:
            return unauthorized("invalid API key")
        scope.setdefault("state", {})["environment"] = environment
        return None


def _declared_length_refusal(headers: dict[str, str]) -> JSONResponse | None:
    length = headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        return error(400, "invalid Content-Length header")
    if int(length) > MAX_BODY_BYTES:
        return _too_large()
    return None


def _too_large() -> JSONResponse:
    return error(413, f"request body over {MAX_BODY_BYTES // 1024} KiB")


async def _read_body(receive: Receive) -> tuple[bytes, JSONResponse | None]:
    """The whole body, stopping as soon as it passes the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", error(400, "the client went away before sending its whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", _too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _json_refusal(body: bytes, content_type: str) -> JSONResponse | None:
    """Malformed or too deeply nested JSON is refused before any route parses it."""
    if not body.strip():
        return None
    try:
        depth = json_depth(json.loads(body))
    except RecursionError:
        depth = MAX_JSON_DEPTH + 1
    except ValueError:
        if content_type and "json" not in content_type.lower():
            return None  # not offered as JSON: the route says what it expected
        return error(400, "malformed JSON in the request body")
    if depth > MAX_JSON_DEPTH:
        return error(400, f"JSON in the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
