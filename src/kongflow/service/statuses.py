"""io statuses (trigger.dev's io.createStatus): named progress records a run keeps while it
executes, each with the history of its updates, read back with the run."""

from __future__ import annotations

from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from kongflow.service.database import Database
from kongflow.service.environments import Environment
from kongflow.service.rows import IoStatus, Json


class StatusService:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._sql = database.sql

    async def update(
        self,
        environment: Environment,
        run_id: str,
        key: str,
        update: dict[str, Json],
    ) -> IoStatus | None:
        """Create or update the run's status `key`: each field given replaces the stored one
        (the label defaults to the key), and the update joins its history. None if the
        environment has no such run."""
        async with self.database.connection() as conn:
            async with conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(self._sql.run_for_task, (run_id, environment.id))
                if await cur.fetchone() is None:
                    return None
            data = update.get("data")
            async with conn.cursor(row_factory=class_row(IoStatus)) as cur:
                await cur.execute(
                    self._sql.upsert_io_status,
                    {
                        "run_id": run_id,
                        "key": key,
                        "label": update.get("label"),
                        "state": update.get("state"),
                        "data": Jsonb(data) if data is not None else None,
                        "update": Jsonb(update),
                    },
                )
                return await cur.fetchone()
