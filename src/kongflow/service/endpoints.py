"""Endpoints: registered after a PING proves the URL serves that endpoint with this
environment's key, then indexed: `indexEndpoint` asks for INDEX_ENDPOINT and records every job
and version it lists in one transaction (what `registerJob` does for a single job)."""

from __future__ import annotations

import logging

from psycopg.rows import class_row

from kongflow.engine.tasks import RunningJob
from kongflow.protocol import JobMetadata
from kongflow.service.catalog import IndexEndpoint, RegisterJob
from kongflow.service.database import Database
from kongflow.service.endpoint_api import EndpointApi, EndpointError
from kongflow.service.environments import Environment
from kongflow.service.outbound import MiB, Outbound
from kongflow.service.registry import Registry
from kongflow.service.rows import Endpoint
from kongflow.service.schedules import ScheduleService
from kongflow.typed import Transaction, WorkerQueue
from kongflow.typed.task import TypedHandler

log = logging.getLogger("kongflow.outbound")


class EndpointService:
    def __init__(
        self,
        queue: WorkerQueue,
        database: Database,
        outbound: Outbound,
        schedules: ScheduleService,
        *,
        answer_limit: int = 4 * MiB,
        timeout: float | None = None,
    ) -> None:
        self.queue = queue
        self.database = database
        self.outbound = outbound
        self.schedules = schedules
        self.answer_limit = answer_limit
        self.timeout = timeout
        self.registry = Registry(database.schema)
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {IndexEndpoint.task: self.index_endpoint, RegisterJob.task: self.register_job}

    async def create_endpoint(self, environment: Environment, slug: str, url: str) -> Endpoint:
        """Register (or re-point) an endpoint and queue its indexing, storing nothing if it
        fails: UrlRefused (a ValueError) if the URL may not be called (its form, or the
        network policy, checked as the PING connects, before anything is sent), EndpointError
        if it does not answer PING as this endpoint."""
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
                IndexEndpoint(id=endpoint.id, source="API"),
                job_key=f"indexEndpoint:{endpoint.id}",
            )
        return endpoint

    async def list_endpoints(self, environment: Environment) -> list[Endpoint]:
        async with self.database.connection() as conn:
            return await self.registry.list_endpoints(conn, environment)

    async def index_endpoint(self, payload: IndexEndpoint, job: RunningJob) -> None:
        endpoint, environment = await self._endpoint(payload.id)
        if endpoint is None or environment is None:
            return
        index = await self._api(endpoint.url, environment.api_key).index()
        async with self.queue.transaction() as tx:  # all of the index, or none of it
            for job_metadata in index.jobs:
                await self._register(tx, environment, endpoint.id, job_metadata)
            await self.schedules.stop_unlisted(tx, endpoint.id, [j.id for j in index.jobs])
            await tx.conn.execute(self._sql.mark_endpoint_indexed, (endpoint.id,))

    async def register_job(self, payload: RegisterJob, job: RunningJob) -> None:
        endpoint, environment = await self._endpoint(payload.endpoint_id)
        if endpoint is None or environment is None:
            return
        metadata = JobMetadata.model_validate(payload.job)
        async with self.queue.transaction() as tx:
            await self._register(tx, environment, endpoint.id, metadata)

    async def _register(
        self, tx: Transaction, environment: Environment, endpoint_id: str, job: JobMetadata
    ) -> None:
        job_id, version_id = await self.registry.register_job(
            tx.conn, environment, endpoint_id, job
        )
        await self.schedules.register(tx, job_id, version_id, environment.id, job)

    def _api(self, url: str, api_key: str) -> EndpointApi:
        return EndpointApi(
            self.outbound, url, api_key, limit=self.answer_limit, timeout=self.timeout
        )

    async def _endpoint(self, endpoint_id: str) -> tuple[Endpoint | None, Environment | None]:
        async with self.database.connection() as conn:
            async with conn.cursor(row_factory=class_row(Endpoint)) as cur:
                await cur.execute(self._sql.endpoint_by_id, (endpoint_id,))
                endpoint = await cur.fetchone()
            if endpoint is None:
                return None, None
            async with conn.cursor(row_factory=class_row(Environment)) as environments:
                await environments.execute(self._sql.environment_by_id, (endpoint.environment_id,))
                environment = await environments.fetchone()
        return endpoint, environment
