"""Endpoints: registered after a PING proves the URL serves that endpoint with this
environment's key, then indexed: `indexEndpoint` asks for INDEX_ENDPOINT and records every job
and version it lists in one transaction (what `registerJob` does for a single job)."""

from __future__ import annotations

import logging
from typing import Any

from psycopg.rows import dict_row

from kongflow.jobs.endpoint_api import EndpointApi, EndpointError
from kongflow.jobs.environments import Environment
from kongflow.jobs.outbound import MiB, Outbound, Unreachable
from kongflow.jobs.registry import Registry
from kongflow.jobs.sql import jobs_sql
from kongflow.protocol import JobMetadata
from kongflow.queue.tasks import RunningJob
from kongflow.workerqueue import WorkerQueue
from kongflow.workerqueue.catalog import IndexEndpointPayload, RegisterJobPayload

log = logging.getLogger("kongflow.outbound")


class EndpointService:
    def __init__(
        self,
        queue: WorkerQueue,
        outbound: Outbound,
        *,
        answer_limit: int = 4 * MiB,
        timeout: float | None = None,
    ) -> None:
        self.queue = queue
        self.outbound = outbound
        self.answer_limit = answer_limit
        self.timeout = timeout
        self.registry = Registry(queue.client.schema)
        self._sql = jobs_sql(queue.client.schema)

    def handlers(self) -> dict[str, Any]:
        return {"indexEndpoint": self.index_endpoint, "registerJob": self.register_job}

    async def create_endpoint(
        self, environment: Environment, slug: str, url: str
    ) -> dict[str, Any]:
        """Register (or re-point) an endpoint and queue its indexing, storing nothing if it
        fails: UrlRefused (a ValueError) if the URL may not be called (its form, or the
        network policy: checked before any connection), EndpointError if it does not answer
        PING as this endpoint."""
        try:
            await self.outbound.check_url(url)
        except Unreachable as exc:
            raise EndpointError(str(exc)) from None
        pong = await self._api(url, environment.api_key).ping(slug)
        if not pong.ok:
            # Its words stay in the log: the answer is the target's, not ours to hand on.
            log.info("%s refused PING as endpoint %r: %.300r", url, slug, pong.error)
            raise EndpointError(
                f"the endpoint at {url} refused PING as endpoint {slug!r}: check that its id "
                "is that slug and that it has this environment's API key"
            )
        async with self.queue.transaction() as tx:
            endpoint = await self.registry.register_endpoint(tx.conn, environment, slug, url)
            await tx.enqueue(
                "indexEndpoint",
                {"id": endpoint["id"], "source": "API"},
                job_key=f"indexEndpoint:{endpoint['id']}",
            )
        return endpoint

    async def list_endpoints(self, environment: Environment) -> list[dict[str, Any]]:
        async with self.queue.client.pool.connection() as conn:
            return await self.registry.list_endpoints(conn, environment)

    async def index_endpoint(self, payload: IndexEndpointPayload, job: RunningJob) -> None:
        endpoint, environment = await self._endpoint(payload.id)
        if endpoint is None or environment is None:
            return
        index = await self._api(endpoint["url"], environment.api_key).index()
        async with self.queue.transaction() as tx:  # all of the index, or none of it
            for job_metadata in index.jobs:
                await self.registry.register_job(tx.conn, environment, endpoint["id"], job_metadata)
            await tx.conn.execute(self._sql.mark_endpoint_indexed, (endpoint["id"],))

    async def register_job(self, payload: RegisterJobPayload, job: RunningJob) -> None:
        endpoint, environment = await self._endpoint(payload.endpoint_id)
        if endpoint is None or environment is None:
            return
        metadata = JobMetadata.model_validate(payload.job)
        async with self.queue.transaction() as tx:
            await self.registry.register_job(tx.conn, environment, endpoint["id"], metadata)

    def _api(self, url: str, api_key: str) -> EndpointApi:
        return EndpointApi(
            self.outbound, url, api_key, limit=self.answer_limit, timeout=self.timeout
        )

    async def _endpoint(self, endpoint_id: str) -> tuple[dict[str, Any] | None, Environment | None]:
        async with (
            self.queue.client.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(self._sql.endpoint_by_id, (endpoint_id,))
            endpoint = await cur.fetchone()
            if endpoint is None:
                return None, None
            await cur.execute(self._sql.environment_by_id, (endpoint["environment_id"],))
            environment = await cur.fetchone()
        return endpoint, Environment(**environment) if environment else None
