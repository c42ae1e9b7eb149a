"""Job runs: TestJob creates the event and the run and queues `startRun` in one transaction;
`startRun` numbers the run and queues its execution. Every status change is kept as history."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from kongflow.jobs.environments import Environment
from kongflow.jobs.sql import jobs_sql
from kongflow.queue.errors import KongflowError
from kongflow.queue.tasks import RunningJob
from kongflow.workerqueue import WorkerQueue
from kongflow.workerqueue.catalog import IdPayload

TERMINAL = frozenset(
    {"SUCCESS", "FAILURE", "TIMED_OUT", "ABORTED", "CANCELED", "UNRESOLVED_AUTH", "INVALID_PAYLOAD"}
)


class JobNotFoundError(KongflowError, LookupError):
    def __init__(self, job_slug: str) -> None:
        super().__init__(f"no job {job_slug!r} is registered in this environment")
        self.job_slug = job_slug


@dataclass(frozen=True)
class QueuedRun:
    run_id: str
    event_id: str
    status: str = "queued"

    @property
    def message(self) -> str:
        return f"run {self.run_id} queued for event {self.event_id}"


class RunService:
    def __init__(self, queue: WorkerQueue) -> None:
        self.queue = queue
        self._sql = jobs_sql(queue.client.schema)

    def handlers(self) -> dict[str, Any]:
        return {"startRun": self.start_run}

    async def test_job(
        self, environment: Environment, job_slug: str, payload: Any = None
    ) -> QueuedRun:
        """TestJob: a test event, a PENDING run and its `startRun` job, all or nothing."""
        async with self.queue.transaction() as tx:
            version = await self._latest_version(tx.conn, environment, job_slug)
            # trigger.dev's test event id, test:<event>:<ms>; two tests in one millisecond
            # take the next free millisecond.
            millis = int(time.time() * 1000)
            while True:
                event_id = f"test:{version['event_name']}:{millis}"
                cur = await tx.conn.execute(
                    self._sql.insert_event,
                    (
                        environment.id,
                        event_id,
                        version["event_name"],
                        version["event_source"],
                        Jsonb(payload if payload is not None else {}),
                        Jsonb({}),
                        True,
                    ),
                )
                event_row = await cur.fetchone()
                if event_row is not None:
                    break
                millis += 1
            cur = await tx.conn.execute(
                self._sql.insert_run,
                (
                    version["job_id"],
                    version["version_id"],
                    environment.id,
                    version["endpoint_id"],
                    event_row[0],
                    True,
                    None,
                ),
            )
            run_row = await cur.fetchone()
            assert run_row is not None
            run_id = str(run_row[0])
            await self._record(tx.conn, run_id, "PENDING")
            await tx.enqueue("startRun", {"id": run_id})
        return QueuedRun(run_id, event_id)

    async def start_run(self, payload: IdPayload, job: RunningJob) -> None:
        """PENDING -> QUEUED with the job's next run number, and queue the execution."""
        async with self.queue.transaction() as tx:
            cur = await tx.conn.execute(self._sql.run_for_start, (payload.id,))
            run = await cur.fetchone()
            if run is None or run[2] != "PENDING":
                return  # gone, cancelled or already started: nothing to do
            cur = await tx.conn.execute(self._sql.next_run_number, (run[1],))
            number = await cur.fetchone()
            assert number is not None
            await tx.conn.execute(self._sql.queue_run, (number[0], payload.id))
            await tx.conn.execute(self._sql.record_status, (payload.id, "QUEUED", None))
            await tx.enqueue(
                "performRunExecution",
                {"id": payload.id},
                job_key=f"performRunExecution:{payload.id}",
            )

    async def cancel_run(self, environment: Environment, run_id: str) -> dict[str, Any] | None:
        """CANCELED from any non-terminal status; the run's pending execution is removed (a
        running one finishes its attempt but is not retried). None if there is no such run."""
        async with self.queue.transaction() as tx:
            cur = await tx.conn.execute(self._sql.lock_run, (run_id, environment.id))
            row = await cur.fetchone()
            if row is None:
                return None
            if row[0] not in TERMINAL:
                await tx.conn.execute(self._sql.cancel_run, (run_id,))
                await tx.conn.execute(self._sql.record_status, (run_id, "CANCELED", None))
                await tx.dequeue(f"performRunExecution:{run_id}")
        return await self.get_run(environment, run_id)

    async def get_run(self, environment: Environment, run_id: str) -> dict[str, Any] | None:
        async with (
            self.queue.client.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(self._sql.get_run, (run_id, environment.id))
            run: dict[str, Any] | None = await cur.fetchone()
            if run is None:
                return None
            await cur.execute(self._sql.run_statuses, (run_id,))
            run["statuses"] = await cur.fetchall()
            return run

    async def _latest_version(
        self, conn: AsyncConnection[Any], environment: Environment, job_slug: str
    ) -> dict[str, Any]:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                self._sql.latest_job_version, (environment.project_id, job_slug, environment.id)
            )
            version: dict[str, Any] | None = await cur.fetchone()
        if version is None:
            raise JobNotFoundError(job_slug)
        return version

    async def _record(
        self, conn: AsyncConnection[Any], run_id: str, status: str, detail: Any = None
    ) -> None:
        await conn.execute(self._sql.set_run_status, (status, run_id))
        await conn.execute(
            self._sql.record_status, (run_id, status, Jsonb(detail) if detail else None)
        )
