"""Serve an ASGI app with uvicorn inside the running event loop (for `kongflow dev`, `serve` and
tests), so it shares the loop, and the connection pool, of what runs beside it.

The connection handling is hardened for clients that are slow or hostile: a request's headers
must arrive within `header_timeout` and its body within `body_timeout` (a half-sent request
cannot hold a connection open), at most `max_connections` are kept, and at most
`max_requests` are served at once (more get 503 at once). Sockets are created with TCP_NODELAY (an
answer is never held back by Nagle's algorithm waiting for the client's delayed ACK) and for
IPv4 or IPv6 as the host says."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ServerLimits:
    """How long a client may take, and how many it may be."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: int = 5
    max_connections: int = 1000
    max_requests: int = 500

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_requests < 1 or self.max_connections < self.max_requests:
            raise ValueError("need 1 <= max_requests <= max_connections")


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with read deadlines and a connection cap. A deadline runs while
    the client owes us something: the request line and headers (from the moment the connection
    is idle) or the rest of a body we are reading; past it the connection is closed."""

    limits = ServerLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_state: object = None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.connections) > self.limits.max_connections:
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """Start, keep or stop the read deadline for the state the client is in."""
        state = self.conn.their_state
        reading_body = state is h11.SEND_BODY and self.cycle is not None and self._body_wanted()
        if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            wanted: object = h11.IDLE
        elif reading_body:
            wanted = h11.SEND_BODY
        else:
            wanted = None
        if wanted is self._deadline_state:
            return
        self._cancel_deadline()
        if wanted is not None:
            delay = self.limits.header_timeout if wanted is h11.IDLE else self.limits.body_timeout
            self._deadline = self.loop.call_later(delay, self._expired)
            self._deadline_state = wanted

    def _body_wanted(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_state = None, None

    def _expired(self) -> None:
        self._deadline, self._deadline_state = None, None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # the app's receive() sees a disconnect
        if not self.transport.is_closing():
            self.transport.close()


class _RequestCap:
    """Answers 503 at once to requests beyond `limit` in progress, rather than queueing them
    (uvicorn's own cap counts open connections, so kept-alive idle ones would use it up)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.in_progress = app, limit, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            busy = JSONResponse(
                {"error": "the server is busy; retry shortly"}, 503, headers={"Retry-After": "1"}
            )
            await busy(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: the OS picks one), IPv6 if the host is."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class BackgroundServer:
    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: ServerLimits | None = None,
    ) -> None:
        self._socket = listening_socket(host, port)
        self.host, self.port = self._socket.getsockname()[:2]
        self.limits = limits or ServerLimits()
        protocol = type("GuardedH11", (_GuardedH11,), {"limits": self.limits})
        config = uvicorn.Config(
            _RequestCap(app, self.limits.max_requests),
            http=protocol,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=self.limits.keep_alive_timeout,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> BackgroundServer:
        """Serve (once: a started server is returned as it is)."""
        if self._task is not None:
            return self
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        self._socket.close()

    async def __aenter__(self) -> BackgroundServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
