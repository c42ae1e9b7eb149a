"""Endpoints and the jobs they define (what `indexEndpoint` / `registerJob` record)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from kongflow.jobs.environments import Environment
from kongflow.jobs.sql import jobs_sql
from kongflow.protocol import JobMetadata


class Registry:
    """Records endpoints, jobs and job versions, inside the caller's transaction."""

    def __init__(self, schema: str) -> None:
        self._sql = jobs_sql(schema)

    async def register_endpoint(
        self, conn: AsyncConnection[Any], environment: Environment, slug: str, url: str
    ) -> dict[str, Any]:
        """The endpoint (created, or its URL updated) as a row."""
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._sql.upsert_endpoint, (environment.id, slug, url))
            row = await cur.fetchone()
        assert row is not None
        return row

    async def register_job(
        self,
        conn: AsyncConnection[Any],
        environment: Environment,
        endpoint_id: str,
        job: JobMetadata,
    ) -> str:
        """Records the job and this version of it; returns the version's id."""
        cur = await conn.execute(self._sql.upsert_job, (environment.project_id, job.id, job.name))
        job_id = _id(await cur.fetchone())
        event = job.event
        cur = await conn.execute(
            self._sql.upsert_job_version,
            (
                job_id,
                environment.id,
                endpoint_id,
                job.version,
                event.names,
                event.source,
                Jsonb(event.filter) if event.filter is not None else None,
                job.enabled,
                Jsonb(job.wire()),
            ),
        )
        return _id(await cur.fetchone())

    async def list_endpoints(
        self, conn: AsyncConnection[Any], environment: Environment
    ) -> list[dict[str, Any]]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._sql.list_endpoints, (environment.id,))
            return await cur.fetchall()


def _id(row: Any) -> str:
    assert row is not None
    return str(row[0])
