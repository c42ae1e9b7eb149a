"""The one place connection pools are built, so the client and the worker connect the same way
(autocommit, the database URL resolved alike) and differ only where they mean to."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from kongflow import embedded


async def open_pool(
    database_url: str | None,
    *,
    purpose: str,
    min_size: int,
    max_size: int,
    timeout: float = 30.0,
    utc_sessions: bool = False,
) -> AsyncConnectionPool[Any]:
    """An open pool of autocommit connections to `database_url` (None: DATABASE_URL, else the
    embedded PostgreSQL), named `kongflow-<purpose>` in psycopg's logs. `timeout`: seconds to
    wait for a free connection. `utc_sessions`: sessions read times in UTC (see below)."""
    url = await asyncio.to_thread(embedded.resolve_database_url, database_url)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
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
