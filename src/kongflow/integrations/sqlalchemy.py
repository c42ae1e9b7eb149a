"""kongflow in SQLAlchemy code: the psycopg connection under a `Session` or `Connection` (sync)
or an `AsyncSession` or `AsyncConnection`, to hand to a client's `conn=`, so a job commits or
rolls back with the session's own transaction. The engine must use the psycopg (3) dialect,
`postgresql+psycopg://`.

    from kongflow.integrations.sqlalchemy import psycopg_connection

    with Session(engine) as session, session.begin():
        session.add(Order(id=42))
        client.add_job("orders.charge", {"order": 42}, conn=psycopg_connection(session))

    async with AsyncSession(async_engine) as session, session.begin():
        session.add(Order(id=43))
        conn = await async_psycopg_connection(session)
        await client.add_job("orders.charge", {"order": 43}, conn=conn)
"""

from __future__ import annotations

from typing import Any

import psycopg

from kongflow.extras import MissingExtra

try:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session
except ImportError as exc:
    raise MissingExtra("sqlalchemy", "kongflow.integrations.sqlalchemy", ["sqlalchemy"]) from exc


def psycopg_connection(bind: Session | Connection) -> psycopg.Connection[Any]:
    """The psycopg connection of `bind`'s transaction, begun if it has none (as SQLAlchemy
    begins one on a first statement), so the job commits with `bind.commit()`."""
    connection = bind.connection() if isinstance(bind, Session) else bind
    if not isinstance(connection, Connection):
        raise TypeError(f"expected a SQLAlchemy Session or Connection, got {bind!r}")
    if not connection.in_transaction():  # as SQLAlchemy's autobegin would, so commit() commits
        connection.begin()
    driver = connection.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(_wrong_dialect(connection.dialect.name, connection.dialect.driver))
    return driver


async def async_psycopg_connection(
    bind: AsyncSession | AsyncConnection,
) -> psycopg.AsyncConnection[Any]:
    """The psycopg async connection of `bind`'s transaction, begun if it has none."""
    connection = await bind.connection() if isinstance(bind, AsyncSession) else bind
    if not isinstance(connection, AsyncConnection):
        raise TypeError(f"expected a SQLAlchemy AsyncSession or AsyncConnection, got {bind!r}")
    if not connection.in_transaction():
        await connection.begin()
    driver = (await connection.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError(_wrong_dialect(connection.dialect.name, connection.dialect.driver))
    return driver


def _wrong_dialect(name: str, driver: str) -> str:
    return (
        f"kongflow enqueues through psycopg 3: use a postgresql+psycopg:// engine"
        f" (this one is {name}+{driver})"
    )
