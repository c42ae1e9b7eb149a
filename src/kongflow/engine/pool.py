"""The one place connection pools are built, so the client and the worker connect the same way
(autocommit, the database URL resolved alike) and differ only where they mean to."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from kongflow import embedded

#: The longest a connection of kongflow's pools is waited for in this context (None: the pool's
#: own timeout). The API bounds each request's wait with it, so that a database gone away is
#: answered 503 at once rather than after the pool's 30 s.
CONNECTION_WAIT: ContextVar[float | None] = ContextVar("kongflow_connection_wait", default=None)


class _Pool(AsyncConnectionPool[Any]):
    async def getconn(self, timeout: float | None = None) -> Any:
        return await super().getconn(CONNECTION_WAIT.get() if timeout is None else timeout)


async def open_pool(
    database_url: str | None,
    *,
    purpose: str,
    min_size: int,
    max_size: int,
    timeout: float = 30.0,
    utc_sessions: bool = False,
    prepared_statements: bool = True,
) -> AsyncConnectionPool[Any]:
    """An open pool of autocommit connections to `database_url` (None: DATABASE_URL, else the
    embedded PostgreSQL), named `kongflow-<purpose>` in psycopg's logs. `timeout`: seconds to
    wait for a free connection. `utc_sessions`: sessions read times in UTC (see below).
    `prepared_statements=False` for a transaction-mode pooler (PgBouncer): a statement
    prepared on one server connection is not there when the next transaction lands on another."""
    url = await asyncio.to_thread(embedded.resolve_database_url, database_url)
    pool: AsyncConnectionPool[Any] = _Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(prepared_statements),
        configure=read_times_in_utc if utc_sessions else None,
        timeout=timeout,
        name=f"kongflow-{purpose}",
        open=False,
    )
    await pool.open(wait=True)
    return pool


async def read_times_in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    """Times come back as UTC datetimes whatever the server's zone: the same instants, and
    decoded about twice as fast as in a named zone (claims decode four per job)."""
    await conn.execute("set time zone 'UTC'")


def connect_kwargs(pool: AsyncConnectionPool[Any]) -> dict[str, Any]:
    """The pool's connection arguments (credentials passed apart from the URL), for a connection
    of its own such as LISTEN's."""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    return {k: v for k, v in kwargs.items() if k != "autocommit"}


def connection_kwargs(prepared_statements: bool = True) -> dict[str, Any]:
    """What kongflow's connections are opened with: autocommit, and psycopg's server-side
    prepared statements unless a pooler forbids them (`prepare_threshold=None`)."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if not prepared_statements:
        kwargs["prepare_threshold"] = None
    return kwargs
