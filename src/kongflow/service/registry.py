"""Endpoints and the jobs they define (what `indexEndpoint` / `registerJob` record)."""

from __future__ import annotations

from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from kongflow.protocol import JobMetadata
from kongflow.service.database import Connection
from kongflow.service.environments import Environment
from kongflow.service.rows import Endpoint
from kongflow.service.sql import jobs_sql


class Registry:
    """Records endpoints, jobs and job versions, inside the caller's transaction."""

    def __init__(self, schema: str) -> None:
        self._sql = jobs_sql(schema)

    async def register_endpoint(
        self, conn: Connection, environment: Environment, slug: str, url: str
    ) -> Endpoint:
        """The endpoint (created, or its URL updated)."""
        async with conn.cursor(row_factory=class_row(Endpoint)) as cur:
            await cur.execute(self._sql.upsert_endpoint, (environment.id, slug, url))
            row = await cur.fetchone()
        assert row is not None
        return row

    async def register_job(
        self,
        conn: Connection,
        environment: Environment,
        endpoint_id: str,
        job: JobMetadata,
    ) -> tuple[str, str]:
        """Records the job and this version of it; returns the job's id and the version's."""
        event = job.event
        async with conn.cursor(row_factory=scalar_row) as cur:
            await cur.execute(self._sql.upsert_job, (environment.project_id, job.id, job.name))
            job_id: str | None = await cur.fetchone()
            assert job_id is not None
            await cur.execute(
                self._sql.upsert_job_version,
                (
                    job_id,
                    environment.id,
                    endpoint_id,
                    job.version,
                    event.names,
                    event.source,
                    Jsonb(job.payload_filter) if job.payload_filter is not None else None,
                    job.enabled,
                    Jsonb(job.wire()),
                ),
            )
            version_id: str | None = await cur.fetchone()
        assert version_id is not None
        return job_id, version_id

    async def list_endpoints(self, conn: Connection, environment: Environment) -> list[Endpoint]:
        async with conn.cursor(row_factory=class_row(Endpoint)) as cur:
            await cur.execute(self._sql.list_endpoints, (environment.id,))
            return await cur.fetchall()
