"""The jobs service's database handle, given to each of its parts."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from kongflow.engine.client import Client
from kongflow.service.sql import JobsSQL, jobs_sql

#: A connection as the pool hands it out (tuple rows unless a cursor says otherwise).
Connection = AsyncConnection[TupleRow]


class Database:
    """Connections and the SQL of the service's schema. The pool is the engine client's; it is
    looked up on each use because the client may be opened after the service is assembled."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.schema = client.schema
        self.sql: JobsSQL = jobs_sql(client.schema)

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection (autocommit off: a `with` block's work commits at its end)."""
        return self.client.pool.connection()
