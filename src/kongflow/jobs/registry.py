"""Endpoints and the jobs they define (what `indexEndpoint` / `registerJob` record)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kongflow.jobs.environments import Environment
from kongflow.jobs.sql import jobs_sql


class EventSpecification(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str
    source: str = "trigger.dev"
    filter: dict[str, Any] | None = None


class JobMetadata(BaseModel):
    """A job as an endpoint describes it (trigger.dev's JobMetadata, the fields kongflow uses)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    id: str = Field(min_length=1)
    name: str
    version: str
    event: EventSpecification


class Registry:
    """Records endpoints, jobs and job versions, inside the caller's transaction."""

    def __init__(self, schema: str) -> None:
        self._sql = jobs_sql(schema)

    async def register_endpoint(
        self, conn: AsyncConnection[Any], environment: Environment, slug: str, url: str
    ) -> str:
        cur = await conn.execute(self._sql.upsert_endpoint, (environment.id, slug, url))
        return _id(await cur.fetchone())

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
                event.name,
                event.source,
                Jsonb(event.filter) if event.filter is not None else None,
                Jsonb(job.model_dump(mode="json", by_alias=True)),
            ),
        )
        return _id(await cur.fetchone())


def _id(row: Any) -> str:
    assert row is not None
    return str(row[0])
