"""A proxy in front of the test database that can make it go away: `down()` drops every
connection through it and refuses new ones, as a crashed or unreachable server would, without
touching the server the other tests share."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg


class DatabaseProxy:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._dir = tempfile.TemporaryDirectory(prefix="kongflow-proxy-")
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        info = psycopg.conninfo.conninfo_to_dict(database_url)
        self._target_host = str(info.get("host") or "/tmp")
        self._target_port = int(info.get("port") or 5432)

    @property
    def url(self) -> str:
        """The database URL, through the proxy (a Unix socket in a directory of its own)."""
        parts = urlsplit(self.database_url)
        query = dict(parse_qsl(parts.query))
        query["host"] = self._dir.name
        query["port"] = str(self._target_port)
        netloc = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))

    async def up(self) -> None:
        path = Path(self._dir.name) / f".s.PGSQL.{self._target_port}"
        self._server = await asyncio.start_unix_server(self._accept, path=str(path))

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.down()
        self._dir.cleanup()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._target_host.startswith("/"):
            target = await asyncio.open_unix_connection(
                f"{self._target_host}/.s.PGSQL.{self._target_port}"
            )
        else:
            target = await asyncio.open_connection(self._target_host, self._target_port)
        upstream_reader, upstream_writer = target
        self._writers.update((writer, upstream_writer))
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
