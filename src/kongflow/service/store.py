"""The key-value store of an environment (trigger.dev's io.store / client.store): string
values (the SDK's JSON) by key; the SDK namespaces keys per job and per run itself."""

from __future__ import annotations

from psycopg.rows import class_row, scalar_row

from kongflow.service.database import Database
from kongflow.service.environments import Environment
from kongflow.service.rows import KeyValue

#: The largest value the SDK sends (it refuses more itself).
MAX_VALUE_BYTES = 256 * 1024


class KeyValueStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._sql = database.sql

    async def get(self, environment: Environment, key: str) -> str | None:
        async with (
            self.database.connection() as conn,
            conn.cursor(row_factory=class_row(KeyValue)) as cur,
        ):
            await cur.execute(self._sql.get_value, (environment.id, key))
            row = await cur.fetchone()
        return row.value if row is not None else None

    async def set(self, environment: Environment, key: str, value: str) -> None:
        async with self.database.connection() as conn:
            await conn.execute(self._sql.set_value, (environment.id, key, value))

    async def delete(self, environment: Environment, key: str) -> bool:
        """True if there was such a key."""
        async with (
            self.database.connection() as conn,
            conn.cursor(row_factory=scalar_row) as cur,
        ):
            await cur.execute(self._sql.delete_value, (environment.id, key))
            return await cur.fetchone() is not None
