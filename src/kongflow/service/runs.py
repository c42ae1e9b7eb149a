"""Job runs: how they are created (TestJob, invoke, event dispatch), cancelled and read. A run
is created queued, in the same transaction as its event and its execution job, so a failure
leaves nothing behind; every status change is kept as history."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from kongflow.engine.errors import KongflowError
from kongflow.engine.tasks import RunningJob
from kongflow.service.catalog import PerformRunExecution, RunFinished, StartRun
from kongflow.service.database import Connection, Database
from kongflow.service.environments import Environment
from kongflow.service.network import NetworkPolicy
from kongflow.service.outbound import Outbound, Unreachable, check_url
from kongflow.service.rows import (
    EventRecord,
    IdempotentRun,
    IoStatus,
    JobVersion,
    Json,
    Run,
    RunListing,
    RunState,
    RunStatus,
    TaskLine,
)
from kongflow.typed import Transaction, WorkerQueue
from kongflow.typed.task import TypedHandler

TERMINAL = frozenset(
    {"SUCCESS", "FAILURE", "TIMED_OUT", "ABORTED", "CANCELED", "UNRESOLVED_AUTH", "INVALID_PAYLOAD"}
)


class JobNotFoundError(KongflowError, LookupError):
    def __init__(self, job_slug: str) -> None:
        super().__init__(f"no job {job_slug!r} is registered in this environment")
        self.job_slug = job_slug


class IdempotencyKeyReused(KongflowError, ValueError):
    def __init__(self, key: str, job_slug: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used to invoke job {job_slug!r}: use a new key"
        )


@dataclass(frozen=True)
class QueuedRun:
    run_id: str
    event_id: str
    status: str = "queued"

    @property
    def message(self) -> str:
        return f"run {self.run_id} queued for event {self.event_id}"


@dataclass(frozen=True)
class NewEvent:
    """An event as a sender describes it; `id` defaults to a fresh one."""

    name: str
    payload: Json = None
    context: Json = None
    id: str | None = None
    source: str = "trigger.dev"
    timestamp: datetime | None = None
    deliver_at: datetime | None = None
    deliver_after: float | None = None  # seconds from now, by the database's clock
    is_test: bool = False


class RunService:
    def __init__(
        self, queue: WorkerQueue, database: Database, outbound: Outbound | None = None
    ) -> None:
        """`queue` for transactions and jobs, `database` for reads. `outbound` checks callback
        URLs against its network policy; without one, against the strict default policy."""
        self.queue = queue
        self.database = database
        self._outbound = outbound
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {StartRun.task: self.start_run}

    # -- creating runs -----------------------------------------------------------------------

    async def test_job(
        self, environment: Environment, job_slug: str, payload: Json = None
    ) -> QueuedRun:
        """TestJob: a test event and a queued run with its execution job, in one statement."""
        # trigger.dev's test event id, test:<event>:<ms>; two tests in one millisecond take
        # the next free millisecond.
        millis = int(time.time() * 1000)
        async with self.database.connection() as conn:
            while True:
                run_id = str(uuid.uuid4())
                async with conn.cursor() as cur:
                    await cur.execute(
                        self._sql.create_test_run,
                        self._execution(run_id)
                        | {
                            "run_id": run_id,
                            "project_id": environment.project_id,
                            "job_slug": job_slug,
                            "environment_id": environment.id,
                            "millis": str(millis),
                            "event_payload": Jsonb(payload if payload is not None else {}),
                        },
                    )
                    row = await cur.fetchone()
                assert row is not None
                found, event_id, _ = row
                if not found:
                    raise JobNotFoundError(job_slug)
                if event_id is not None:
                    return QueuedRun(run_id, event_id)
                millis += 1

    async def invoke(
        self,
        environment: Environment,
        job_slug: str,
        payload: Json = None,
        *,
        context: Json = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> tuple[QueuedRun, bool]:
        """Invoke a job directly. A repeated `idempotency_key` returns the first run (and
        False: nothing new was created); the key may not be reused for another job.
        `callback_url` is told of the run's outcome; UrlRefused (a ValueError) if it may not
        be called, before anything is stored."""
        if callback_url is not None:
            await self._check_callback_url(callback_url)
        async with self.queue.transaction() as tx:
            version = await self._latest_version(tx.conn, environment, job_slug)
            if idempotency_key is not None:
                # Serialises invokes with the same key, so exactly one creates the run.
                await tx.conn.execute(
                    self._sql.lock_idempotency_key, (f"{environment.id}:{idempotency_key}",)
                )
                async with tx.conn.cursor(row_factory=class_row(IdempotentRun)) as cur:
                    await cur.execute(
                        self._sql.run_by_idempotency_key, (environment.id, idempotency_key)
                    )
                    existing = await cur.fetchone()
                if existing is not None:
                    if existing.job_slug != job_slug:
                        raise IdempotencyKeyReused(idempotency_key, existing.job_slug)
                    return QueuedRun(existing.id, existing.event_id, existing.status.lower()), False
            event = await self.store_event(
                tx.conn,
                environment,
                NewEvent(
                    name=version.event_name,
                    source=version.event_source,
                    payload=payload if payload is not None else {},
                    context=context,
                ),
            )
            assert event is not None  # a fresh id
            run_id = await self.create_run(
                tx, environment, version, event.id, idempotency_key=idempotency_key
            )
            if callback_url is not None:
                for outcome in ("SUCCESS", "FAILURE"):
                    await tx.conn.execute(
                        self._sql.insert_subscription, (run_id, callback_url, outcome, "WEBHOOK")
                    )
        return QueuedRun(run_id, event.event_id), True

    async def _check_callback_url(self, url: str) -> None:
        """Refused before anything is stored if the network policy refuses its host. A host
        that does not resolve now is taken: it may by the time the run ends, and delivery
        checks again (and retries)."""
        try:
            if self._outbound is not None:
                await self._outbound.check_url(url, target="subscriber")
            else:
                await check_url(url, NetworkPolicy.strict(), target="subscriber")
        except Unreachable:
            pass

    async def store_event(
        self, conn: Connection, environment: Environment, event: NewEvent
    ) -> EventRecord | None:
        """The stored event record, or None if this environment already has that event id."""
        async with conn.cursor(row_factory=class_row(EventRecord)) as cur:
            await cur.execute(
                self._sql.insert_event,
                (
                    environment.id,
                    event.id or uuid.uuid4().hex,
                    event.name,
                    event.source,
                    Jsonb(event.payload),
                    Jsonb(event.context if event.context is not None else {}),
                    event.is_test,
                    event.timestamp,
                    event.deliver_at,
                    event.deliver_after,
                ),
            )
            return await cur.fetchone()

    async def create_run(
        self,
        tx: Transaction,
        environment: Environment,
        version: JobVersion,
        event_record_id: str,
        *,
        is_test: bool = False,
        idempotency_key: str | None = None,
    ) -> str:
        """A run of this job version for this event, queued at once: PENDING -> QUEUED with
        its execution job, in the caller's transaction (its number comes at commit)."""
        run_id = str(uuid.uuid4())
        await tx.conn.execute(
            self._sql.create_run,
            self._execution(run_id)
            | {
                "run_id": run_id,
                "job_id": version.job_id,
                "version_id": version.version_id,
                "environment_id": environment.id,
                "endpoint_id": version.endpoint_id,
                "event_id": event_record_id,
                "is_test": is_test,
                "idempotency_key": idempotency_key,
            },
        )
        return run_id

    def _execution(self, run_id: str) -> dict[str, Any]:
        """The parameters of the run's execution job in `create_run` / `create_test_run`."""
        _, params = self.queue.add_job_call(
            PerformRunExecution(id=run_id), job_key=execution_key(run_id)
        )
        return params

    # -- the run's life ----------------------------------------------------------------------

    async def start_run(self, payload: StartRun, job: RunningJob) -> None:
        """PENDING -> QUEUED with the job's next run number, and queue the execution: for the
        `startRun` jobs of runs created PENDING by an earlier kongflow (runs are now queued as
        they are created), still in the queue when it was upgraded."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=class_row(RunState)) as cur:
                await cur.execute(self._sql.run_for_start, (payload.id,))
                run = await cur.fetchone()
            if run is None or run.status != "PENDING":
                return  # gone, cancelled or already started: nothing to do
            async with tx.conn.cursor(row_factory=scalar_row) as numbers:
                await numbers.execute(self._sql.next_run_number, (run.job_id,))
                number: int | None = await numbers.fetchone()
            assert number is not None
            await tx.conn.execute(self._sql.queue_run, (number, payload.id))
            await self.record_status(tx.conn, payload.id, "QUEUED")
            await tx.enqueue(PerformRunExecution(id=payload.id), job_key=execution_key(payload.id))

    async def cancel_run(self, environment: Environment, run_id: str) -> Run | None:
        """CANCELED from any non-terminal status, with its open tasks; the run's pending
        execution is removed and a running one is stopped (a result that still arrives is
        ignored; a waiting task's resumption finds the run over). None if there is no such
        run."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(self._sql.lock_run, (run_id, environment.id))
                status: str | None = await cur.fetchone()
            if status is None:
                return None
            if status not in TERMINAL:
                await tx.conn.execute(self._sql.cancel_run, (run_id,))
                await tx.conn.execute(self._sql.close_open_tasks, ("CANCELED", run_id))
                await self.record_status(tx.conn, run_id, "CANCELED")
                execution = await tx.dequeue(execution_key(run_id))
                if execution is not None and execution.state == "running":
                    # Stop the request in flight too, freeing the run's queue at once.
                    await self.queue.client.cancel_job(execution.id, conn=tx.conn)
                await tx.enqueue(RunFinished(id=run_id))
        return await self.get_run(environment, run_id)

    async def record_status(
        self, conn: Connection, run_id: str, status: str, detail: Json = None
    ) -> None:
        await conn.execute(
            self._sql.record_status,
            (run_id, status, Jsonb(detail) if detail is not None else None),
        )

    # -- reading -----------------------------------------------------------------------------

    async def list_runs(
        self, environment: Environment, job_slug: str, *, cursor: str | None, take: int
    ) -> tuple[list[RunListing], str | None]:
        """A job's runs in this environment, newest first: `take` of them after `cursor` (a run
        id), and the cursor of the next page (None on the last). JobNotFoundError if the
        project has no such job."""
        async with self.database.connection() as conn:
            async with conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(self._sql.job_exists, (environment.project_id, job_slug))
                job_id: str | None = await cur.fetchone()
            if job_id is None:
                raise JobNotFoundError(job_slug)
            async with conn.cursor(row_factory=class_row(RunListing)) as cur:
                await cur.execute(
                    self._sql.runs_of_job,
                    {
                        "job_id": job_id,
                        "environment_id": environment.id,
                        "cursor": cursor,
                        "limit": take + 1,
                    },
                )
                runs = await cur.fetchall()
        more = len(runs) > take
        return runs[:take], runs[take - 1].id if more else None

    async def get_run(self, environment: Environment, run_id: str) -> Run | None:
        """The run with its status history, tasks and io statuses, or None if this environment
        has no such run."""
        async with self.database.connection() as conn:
            async with conn.cursor(row_factory=class_row(Run)) as cur:
                await cur.execute(self._sql.get_run, (run_id, environment.id))
                run = await cur.fetchone()
            if run is None:
                return run
            async with conn.cursor(row_factory=class_row(RunStatus)) as history:
                await history.execute(self._sql.run_statuses, (run_id,))
                statuses = await history.fetchall()
            async with conn.cursor(row_factory=class_row(TaskLine)) as tasks:
                await tasks.execute(self._sql.run_tasks, (run_id,))
                run_tasks = await tasks.fetchall()
            async with conn.cursor(row_factory=class_row(IoStatus)) as io:
                await io.execute(self._sql.run_io_statuses, (run_id,))
                io_statuses = await io.fetchall()
        return replace(
            run, statuses=tuple(statuses), tasks=tuple(run_tasks), io_statuses=tuple(io_statuses)
        )

    async def _latest_version(
        self, conn: Connection, environment: Environment, job_slug: str
    ) -> JobVersion:
        async with conn.cursor(row_factory=class_row(JobVersion)) as cur:
            await cur.execute(
                self._sql.latest_job_version,
                {
                    "project_id": environment.project_id,
                    "job_slug": job_slug,
                    "environment_id": environment.id,
                },
            )
            version = await cur.fetchone()
        if version is None:
            raise JobNotFoundError(job_slug)
        return version


def execution_key(run_id: str) -> str:
    """The job key of a run's execution: one pending execution per run."""
    return f"performRunExecution:{run_id}"
