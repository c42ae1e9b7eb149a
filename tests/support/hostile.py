"""A hostile HTTP server on 127.0.0.1, for the outbound calls' tests: raw asyncio, so each
path can misbehave byte by byte (huge, slow, silent, resetting, redirecting, secret-leaking
answers). Each connection serves one request and closes."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SECRET = "hunter2-db-password"
CHUNK = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Hostile:
    """`async with Hostile() as server:`; `server.url + "/huge"` and so on (see the methods
    named after the paths). `requests` holds what arrived; `sent` counts body bytes sent."""

    redirect_to: str = "http://127.0.0.1:9/landed"
    huge_size: int = 300 * 1024 * 1024
    requests: list[Request] = field(default_factory=list)
    sent: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Hostile:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Request(method, target, headers, body))
            answer: Callable[[asyncio.StreamWriter], Awaitable[None]] = getattr(
                self, "_" + target.strip("/").replace("-", "_"), self._ok
            )
            await answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: what several of these paths are for
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _head(
        writer: asyncio.StreamWriter, status: str, headers: dict[str, str] | None = None
    ) -> None:
        lines = [f"HTTP/1.1 {status}", "connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()

    async def _answer(self, writer: asyncio.StreamWriter, status: str, body: bytes) -> None:
        await self._head(
            writer,
            status,
            {"content-type": "application/json", "content-length": str(len(body))},
        )
        writer.write(body)
        await writer.drain()

    async def _ok(self, writer: asyncio.StreamWriter) -> None:
        await self._answer(writer, "200 OK", b'{"ok": true}')

    async def _huge(self, writer: asyncio.StreamWriter) -> None:
        """`huge_size` bytes, streamed with no declared length, for as long as it is read."""
        await self._head(writer, "200 OK", {"content-type": "application/json"})
        chunk = b"x" * CHUNK
        while self.sent < self.huge_size:
            writer.write(chunk)
            await writer.drain()
            self.sent += len(chunk)

    async def _declared(self, writer: asyncio.StreamWriter) -> None:
        """Declares `huge_size` bytes up front, then sends slowly."""
        await self._head(writer, "200 OK", {"content-length": str(self.huge_size)})
        while True:
            writer.write(b"x" * 1024)
            await writer.drain()
            self.sent += 1024
            await asyncio.sleep(0.05)

    async def _bomb(self, writer: asyncio.StreamWriter) -> None:
        """64 MiB of zeros, gzipped to about 64 KiB."""
        compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        body = compressor.compress(bytes(64 * 1024 * 1024)) + compressor.flush()
        await self._head(
            writer, "200 OK", {"content-encoding": "gzip", "content-length": str(len(body))}
        )
        writer.write(body)
        await writer.drain()
        self.sent += len(body)

    async def _gzipped(self, writer: asyncio.StreamWriter) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        body = compressor.compress(b'{"ok": true}') + compressor.flush()
        await self._head(
            writer, "200 OK", {"content-encoding": "gzip", "content-length": str(len(body))}
        )
        writer.write(body)
        await writer.drain()

    async def _drip(self, writer: asyncio.StreamWriter) -> None:
        """A body of 1000 bytes, one every 0.1 s: each read is quick, the whole is not."""
        await self._head(writer, "200 OK", {"content-length": "1000"})
        for _ in range(1000):
            writer.write(b"x")
            await writer.drain()
            self.sent += 1
            await asyncio.sleep(0.1)

    async def _silent(self, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    async def _reset(self, writer: asyncio.StreamWriter) -> None:
        """Aborts the connection with a TCP reset."""
        sock: socket.socket = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _hangup(self, writer: asyncio.StreamWriter) -> None:
        """Closes the connection without answering."""

    async def _redirect(self, writer: asyncio.StreamWriter) -> None:
        await self._head(writer, "302 Found", {"location": self.redirect_to, "content-length": "0"})

    async def _secret(self, writer: asyncio.StreamWriter) -> None:
        body = f'{{"db_password": "{SECRET}", "message": "Forbidden"}}'.encode()
        await self._answer(writer, "403 Forbidden", body)

    async def _secret_ok(self, writer: asyncio.StreamWriter) -> None:
        """200 with JSON that is not what kongflow expects, secrets in it."""
        await self._answer(writer, "200 OK", f'{{"db_password": "{SECRET}"}}'.encode())

    async def _secret_pong(self, writer: asyncio.StreamWriter) -> None:
        """A PingResponse-shaped refusal whose error is someone's secret."""
        await self._answer(
            writer, "200 OK", f'{{"ok": false, "error": "password={SECRET}"}}'.encode()
        )

    async def _host(self, writer: asyncio.StreamWriter) -> None:
        """Answers with the Host header it was sent."""
        host = self.requests[-1].headers.get("host", "")
        await self._answer(writer, "200 OK", f'{{"host": "{host}"}}'.encode())


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
