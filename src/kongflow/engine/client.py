"""The engine's write side: enqueue and administer jobs, alone or inside the caller's transaction.

Every method takes an optional `conn`, a psycopg connection (async or sync) of the caller: the
statement then runs in the caller's transaction and commits or rolls back with it, and workers are
woken (NOTIFY) only when it commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg import AsyncConnection, Connection
from psycopg_pool import AsyncConnectionPool

from kongflow.engine.bulk import copy_jobs
from kongflow.engine.client_base import ClientBase
from kongflow.engine.migrate import channels, migrate
from kongflow.engine.models import Job, JobKeyMode, JobSpec
from kongflow.engine.pool import connection_kwargs, open_pool
from kongflow.engine.rates import RateLimit
from kongflow.engine.results import SettledListener, WaitTimeout, outcome
from kongflow.engine.statements import Statement, validated_specs
from kongflow.engine.tracing import enqueue_span
from kongflow.engine.workflows import Workflow, WorkflowRun

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    pass

AnyConnection = AsyncConnection[Any] | Connection[Any]
T = TypeVar("T")


class Client(ClientBase[AsyncConnectionPool[Any]]):
    """A handle on one kongflow schema: `async with Client(url) as client: ...`.

    With no URL it uses DATABASE_URL, else the embedded PostgreSQL. Opening it applies pending
    migrations (the engine's, and those of the layers named in `components`) unless
    `migrate=False`.
    """

    _how_to_open = "use `async with Client(...)` or open()"
    _settled: SettledListener | None = None
    _settled_lock: asyncio.Lock | None = None

    async def open(self) -> Client:
        if self._pool is None:
            self._pool = await open_pool(
                self._database_url,
                purpose="client",
                min_size=1,
                max_size=self._max_connections,
                prepared_statements=self._prepared_statements,
            )
        if self._migrate:
            await self.migrate()
        return self

    async def close(self) -> None:
        if self._settled is not None:
            await self._settled.close()
            self._settled = None
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def migrate(self) -> None:
        async with self.pool.connection() as conn:
            await migrate(conn, self.schema, self._components)

    async def add_job(
        self,
        identifier: str,
        payload: Any = None,
        *,
        queue_name: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        job_key: str | None = None,
        job_key_mode: JobKeyMode = "replace",
        priority: int | None = None,
        flags: Sequence[str] | None = None,
        conn: AnyConnection | None = None,
    ) -> Job:
        """Enqueue one job (graphile-worker's addJob, with its job-key semantics)."""
        with enqueue_span(identifier, queue_name) as headers:
            statement = self._statements.add_job(
                self._statements.add_job_params(
                    identifier,
                    payload,
                    queue_name,
                    run_at,
                    max_attempts,
                    job_key,
                    job_key_mode,
                    priority,
                    flags,
                    headers,
                )
            )
            return await self._run(statement, conn)

    async def add_jobs(
        self,
        specs: Iterable[JobSpec],
        *,
        job_key_preserve_run_at: bool = False,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Enqueue many jobs in one statement and one NOTIFY; built for 100k+ jobs a call."""
        return await self._run(self._statements.add_jobs(specs, job_key_preserve_run_at), conn)

    async def add_jobs_fast(
        self,
        specs: Iterable[JobSpec],
        *,
        job_key_preserve_run_at: bool = False,
        conn: AnyConnection | None = None,
    ) -> int:
        """`add_jobs` without sending the jobs back: returns how many were added or updated.
        Reading the rows back is most of a bulk enqueue's cost; skip it when you do not need
        them (River's InsertManyFast). A batch without job keys is written with COPY."""
        specs = list(specs)
        if (
            not specs
            or isinstance(conn, Connection)
            or any(isinstance(spec, JobSpec) and spec.job_key is not None for spec in specs)
        ):
            counted = self._statements.add_jobs_counted(specs, job_key_preserve_run_at)
            return await self._run(counted, conn)
        rows = validated_specs(specs, encode=True)
        if conn is None:
            async with self.pool.connection() as own:
                counts = await copy_jobs(own, self._statements.sql, rows)
        else:
            counts = await copy_jobs(conn, self._statements.sql, rows)
        if self._metrics is not None:
            self._metrics.record_enqueued_counts(
                (task, queue, count) for (task, queue), count in counts.items()
            )
        return len(rows)

    async def remove_job(self, job_key: str, *, conn: AnyConnection | None = None) -> Job | None:
        """Delete the job with this key if it is not running; a running one loses its key and
        will not be retried. Returns the job, or None when no job has the key."""
        return await self._run(self._statements.remove_job(job_key), conn)

    async def complete_jobs(
        self, job_ids: Sequence[int], *, conn: AnyConnection | None = None
    ) -> list[Job]:
        """Mark jobs completed; running jobs are left alone."""
        return await self._run(self._statements.complete_jobs(job_ids), conn)

    async def permanently_fail_jobs(
        self,
        job_ids: Sequence[int],
        message: str | None = None,
        *,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Fail jobs for good (no more retries); running jobs are left alone."""
        return await self._run(self._statements.permanently_fail_jobs(job_ids, message), conn)

    async def reschedule_jobs(
        self,
        job_ids: Sequence[int],
        *,
        run_at: datetime | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        max_attempts: int | None = None,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Change when and how jobs run; running jobs are left alone."""
        statement = self._statements.reschedule_jobs(
            job_ids, run_at=run_at, priority=priority, attempts=attempts, max_attempts=max_attempts
        )
        return await self._run(statement, conn)

    async def get_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """A job in any state, including completed and cancelled ones still retained."""
        return await self._run(self._statements.get_job(job_id), conn)

    async def cancel_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """Cancel a job: at once if it is not running, else its worker is asked to stop it and
        it will not be retried. Returns the job, or None if there is no such job."""
        return await self._run(self._statements.cancel_job(job_id), conn)

    async def retry_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """Run a job that is not running now; a permanently failed one gets one more attempt.
        Returns None when there is no such job waiting (running, finished or unknown)."""
        return await self._run(self._statements.retry_job(job_id), conn)

    async def delete_jobs(
        self, job_ids: Sequence[int], *, conn: AnyConnection | None = None
    ) -> list[int]:
        """Delete jobs that are not running (finished ones too); returns the deleted ids."""
        return await self._run(self._statements.delete_jobs(job_ids), conn)

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Newest first, in any state (finished jobs while retained)."""
        statement = self._statements.list_jobs(state=state, task=task, queue=queue, limit=limit)
        return await self._run(statement, conn)

    async def queue_stats(self, *, conn: AnyConnection | None = None) -> list[dict[str, Any]]:
        """Per queue: jobs by state, oldest available time, limit, paused."""
        return await self._run(self._statements.queue_stats(), conn)

    async def force_unlock_workers(
        self, worker_ids: Sequence[str], *, conn: AnyConnection | None = None
    ) -> list[int]:
        """Release the jobs of these workers now, as if their lease had expired; returns the
        released job ids."""
        return await self._run(self._statements.force_unlock_workers(worker_ids), conn)

    async def set_queue_limits(
        self, limits: Mapping[str, int], *, conn: AnyConnection | None = None
    ) -> None:
        """Set global concurrency limits by queue name or pattern (`{"runs:*": 1}`)."""
        await self._run(self._statements.set_queue_limits(limits), conn)

    async def set_rate_limits(
        self, limits: Mapping[str, RateLimit | str | None], *, conn: AnyConnection | None = None
    ) -> None:
        """Set rate limits by queue name or pattern (`{"emails": "100/min", "api:*": "10/s"}`;
        None removes one): at most so many job starts in any window, across every worker. A
        pattern's limit holds for each queue it matches on its own."""
        await self._run(self._statements.set_rate_limits(limits), conn)

    async def pause_queue(self, queue_name: str, *, conn: AnyConnection | None = None) -> None:
        """No worker takes jobs from this queue until it is resumed (running ones finish)."""
        await self._run(self._statements.pause_queue(queue_name), conn)

    async def resume_queue(self, queue_name: str, *, conn: AnyConnection | None = None) -> None:
        await self._run(self._statements.resume_queue(queue_name), conn)

    async def queue_known(self, queue_name: str, *, conn: AnyConnection | None = None) -> bool:
        """Whether the queue has jobs or a row (it had jobs recently, or was paused), or a limit
        policy matches its name."""
        return await self._run(self._statements.queue_known(queue_name), conn)

    async def add_workflow(
        self, workflow: Workflow, *, conn: AnyConnection | None = None
    ) -> WorkflowRun:
        """Enqueue a workflow's steps in one transaction (see kongflow.engine.workflows): each
        runs when the steps and jobs it comes after completed. A cycle, a step after an unknown
        step, or a step with a job key is refused, and nothing is written."""
        return await self._run(self._statements.add_workflow(workflow), conn)

    async def workflow_jobs(
        self, workflow_id: int, *, conn: AnyConnection | None = None
    ) -> dict[str, Job]:
        """Each step's job as it is now (state `blocked` while it waits for its dependencies),
        by step name; empty for an unknown workflow."""
        return await self._run(self._statements.workflow_jobs(workflow_id), conn)

    async def dependency_results(
        self, job: Job | int, *, conn: AnyConnection | None = None
    ) -> dict[str, Any]:
        """What the jobs a job depends on returned: by step name in its workflow (by job id as
        text for a dependency outside it), for those that completed and are kept."""
        job_id = job.id if isinstance(job, Job) else job
        return await self._run(self._statements.dependency_results(job_id), conn)

    async def wait_for(self, job: Job | int, *, timeout: float | None = None) -> Any:
        """The result of the job (a `Job`, or its id) once it completes, from any process:
        woken when it settles, not by polling. Raises JobFailed when it fails for good,
        JobCancelled when it is cancelled, JobGone when it is not in the database (deleted, or
        removed by retention), WaitTimeout after `timeout` seconds (None: no limit)."""
        job_id = job.id if isinstance(job, Job) else job
        listener = await self._settled_listener()
        woken = listener.subscribe(job_id)
        settled = False
        try:
            wait_id = await self._run(self._statements.register_wait(job_id), None)
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        done, result = outcome(job_id, await self.get_job(job_id), settled)
                        if done:
                            return result
                        await woken.wait()
                        woken.clear()
                        settled = True
            except TimeoutError:
                raise WaitTimeout(job_id, timeout or 0) from None
            finally:
                await self._run(self._statements.unregister_wait(wait_id), None)
        finally:
            listener.unsubscribe(job_id, woken)

    async def _settled_listener(self) -> SettledListener:
        # One listener, however many waits begin at once: its creation awaits a connection,
        # during which other waits must not make their own (each would leak a LISTEN).
        if self._settled_lock is None:
            self._settled_lock = asyncio.Lock()
        async with self._settled_lock:
            if self._settled is None:
                async with self.pool.connection() as conn:  # the pool's server, as given
                    dsn, password = conn.info.dsn, conn.info.password
                kwargs = connection_kwargs(self._prepared_statements) | {"password": password}
                self._settled = SettledListener(dsn, kwargs, channels(self.schema)["settled"])
        await self._settled.start()
        return self._settled

    async def unhandled_tasks(self, *, conn: AnyConnection | None = None) -> list[dict[str, Any]]:
        """Tasks with ready jobs that no live worker takes (no handler for the task, or none
        serving the queue): task_identifier, ready, oldest_run_at, queue_names."""
        return await self._run(self._statements.unhandled_tasks(), conn)

    async def _run(self, statement: Statement[T], conn: AnyConnection | None) -> T:
        if statement.query is None:
            rows: list[Any] = []
        elif conn is None:
            async with self.pool.connection() as own:
                rows = await _fetch_async(own, statement)
        elif isinstance(conn, AsyncConnection):
            rows = await _fetch_async(conn, statement)
        elif isinstance(conn, Connection):
            rows = await asyncio.to_thread(fetch_sync, conn, statement)
        else:
            raise TypeError(f"conn must be a psycopg Connection or AsyncConnection, got {conn!r}")
        return self._answer(statement, rows)


async def _fetch_async(conn: AsyncConnection[Any], statement: Statement[Any]) -> list[Any]:
    async with conn.cursor(row_factory=statement.row_factory) as cur:
        await cur.execute(statement.query, statement.params)  # type: ignore[arg-type]
        return await cur.fetchall()


def fetch_sync(conn: Connection[Any], statement: Statement[Any]) -> list[Any]:
    """The rows of `statement` run on a synchronous connection (the caller's transaction)."""
    with conn.cursor(row_factory=statement.row_factory) as cur:
        cur.execute(statement.query, statement.params)  # type: ignore[arg-type]
        return cur.fetchall()
