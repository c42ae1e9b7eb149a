"""The jobs service's migrations, applied after the engine's.

Its migrations hold tables, indexes and data changes. It has no SQL functions or views today; any
it gets go to `kongflow.jobs.definitions`, one current definition each (see
`kongflow.queue.migrate`), applied after the engine's. Its Python-side statements are in
`kongflow.jobs.sql`."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from kongflow.queue.migrate import ENGINE_COMPONENT, Migration, migrate

JOBS_COMPONENT = ("jobs", "kongflow.jobs.migrations")
ALL_COMPONENTS = [ENGINE_COMPONENT, JOBS_COMPONENT]


async def migrate_service(conn: AsyncConnection[Any], schema: str) -> list[Migration]:
    """Create or upgrade the engine and the jobs service in `schema`."""
    return await migrate(conn, schema, ALL_COMPONENTS)
