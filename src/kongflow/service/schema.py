"""The jobs service's migrations, applied after the engine's.

Its migrations hold tables, indexes and data changes; its functions and triggers are in
`kongflow.service.definitions`, one current definition each (see `kongflow.engine.migrate`),
applied after the engine's. Its Python-side statements are in
`kongflow.service.sql`."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from kongflow.engine.migrate import ENGINE_COMPONENT, Migration, migrate

JOBS_COMPONENT = ("jobs", "kongflow.service.migrations")
ALL_COMPONENTS = [ENGINE_COMPONENT, JOBS_COMPONENT]


async def migrate_service(conn: AsyncConnection[Any], schema: str) -> list[Migration]:
    """Create or upgrade the engine and the jobs service in `schema`."""
    return await migrate(conn, schema, ALL_COMPONENTS)
