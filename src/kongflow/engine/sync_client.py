"""The engine's write side for synchronous code (WSGI apps, scripts, Django, SQLAlchemy): the
operations of `Client`, on a pool of blocking connections, with no event loop.

It runs the very statements `Client` runs (`kongflow.engine.statements`), so input is checked and
answers are built alike. Every method takes an optional `conn`, the caller's own psycopg
`Connection`: the statement then runs in the caller's transaction, and workers are woken only
when it commits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from kongflow import embedded
from kongflow.engine.client import fetch_sync
from kongflow.engine.client_base import ClientBase
from kongflow.engine.migrate import ENGINE_COMPONENT, Migration, channels, migrate
from kongflow.engine.models import Job, JobKeyMode, JobSpec
from kongflow.engine.pool import connection_kwargs
from kongflow.engine.rates import RateLimit
from kongflow.engine.results import WaitTimeout, announced_ids, outcome
from kongflow.engine.statements import Statement
from kongflow.engine.tracing import enqueue_span
from kongflow.engine.workflows import Workflow, WorkflowRun

if TYPE_CHECKING:
    pass

T = TypeVar("T")


class SyncClient(ClientBase[ConnectionPool[Any]]):
    """A blocking handle on one kongflow schema: `with SyncClient(url) as client: ...`.

    With no URL it uses DATABASE_URL, else the embedded PostgreSQL. Opening it applies pending
    migrations unless `migrate=False`. Safe to share between threads (a connection pool).
    """

    _how_to_open = "use `with SyncClient(...)` or open()"

    def open(self) -> SyncClient:
        if self._pool is None:
            url = embedded.resolve_database_url(self._database_url)
            pool: ConnectionPool[Any] = ConnectionPool(
                url,
                min_size=1,
                max_size=self._max_connections,
                kwargs=connection_kwargs(self._prepared_statements),
                name="kongflow-sync-client",
                open=False,
            )
            pool.open(wait=True)
            self._pool = pool
        if self._migrate:
            self.migrate()
        return self

    def close(self) -> None:
        if self._pool is not None and self._owns_pool:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> SyncClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def migrate(self) -> list[Migration]:
        """Apply the pending migrations of this client's schema and components (on a connection
        of its own to the same server: DDL outside any caller's transaction)."""
        with self._connection() as conn:
            dsn, password = conn.info.dsn, conn.info.password
        return migrate_blocking(dsn, password, self.schema, self._components)

    def add_job(
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
        conn: Connection[Any] | None = None,
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
            return self._run(statement, conn)

    def add_jobs(
        self,
        specs: Iterable[JobSpec],
        *,
        job_key_preserve_run_at: bool = False,
        conn: Connection[Any] | None = None,
    ) -> list[Job]:
        """Enqueue many jobs in one statement and one NOTIFY."""
        return self._run(self._statements.add_jobs(specs, job_key_preserve_run_at), conn)

    def add_jobs_fast(
        self,
        specs: Iterable[JobSpec],
        *,
        job_key_preserve_run_at: bool = False,
        conn: Connection[Any] | None = None,
    ) -> int:
        """`add_jobs` without sending the jobs back: returns how many were added or updated
        (one statement; the async Client writes a batch without job keys with COPY)."""
        statement = self._statements.add_jobs_counted(specs, job_key_preserve_run_at)
        return self._run(statement, conn)

    def remove_job(self, job_key: str, *, conn: Connection[Any] | None = None) -> Job | None:
        """Delete the job with this key if it is not running; a running one loses its key and
        will not be retried. Returns the job, or None when no job has the key."""
        return self._run(self._statements.remove_job(job_key), conn)

    def complete_jobs(
        self, job_ids: Sequence[int], *, conn: Connection[Any] | None = None
    ) -> list[Job]:
        """Mark jobs completed; running jobs are left alone."""
        return self._run(self._statements.complete_jobs(job_ids), conn)

    def permanently_fail_jobs(
        self,
        job_ids: Sequence[int],
        message: str | None = None,
        *,
        conn: Connection[Any] | None = None,
    ) -> list[Job]:
        """Fail jobs for good (no more retries); running jobs are left alone."""
        return self._run(self._statements.permanently_fail_jobs(job_ids, message), conn)

    def reschedule_jobs(
        self,
        job_ids: Sequence[int],
        *,
        run_at: datetime | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        max_attempts: int | None = None,
        conn: Connection[Any] | None = None,
    ) -> list[Job]:
        """Change when and how jobs run; running jobs are left alone."""
        statement = self._statements.reschedule_jobs(
            job_ids, run_at=run_at, priority=priority, attempts=attempts, max_attempts=max_attempts
        )
        return self._run(statement, conn)

    def get_job(self, job_id: int, *, conn: Connection[Any] | None = None) -> Job | None:
        """A job in any state, including completed and cancelled ones still retained."""
        return self._run(self._statements.get_job(job_id), conn)

    def cancel_job(self, job_id: int, *, conn: Connection[Any] | None = None) -> Job | None:
        """Cancel a job: at once if it is not running, else its worker is asked to stop it and
        it will not be retried. Returns the job, or None if there is no such job."""
        return self._run(self._statements.cancel_job(job_id), conn)

    def retry_job(self, job_id: int, *, conn: Connection[Any] | None = None) -> Job | None:
        """Run a job that is not running now; a permanently failed one gets one more attempt.
        Returns None when there is no such job waiting (running, finished or unknown)."""
        return self._run(self._statements.retry_job(job_id), conn)

    def delete_jobs(
        self, job_ids: Sequence[int], *, conn: Connection[Any] | None = None
    ) -> list[int]:
        """Delete jobs that are not running (finished ones too); returns the deleted ids."""
        return self._run(self._statements.delete_jobs(job_ids), conn)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        conn: Connection[Any] | None = None,
    ) -> list[Job]:
        """Newest first, in any state (finished jobs while retained)."""
        statement = self._statements.list_jobs(state=state, task=task, queue=queue, limit=limit)
        return self._run(statement, conn)

    def queue_stats(self, *, conn: Connection[Any] | None = None) -> list[dict[str, Any]]:
        """Per queue: jobs by state, oldest available time, limit, paused."""
        return self._run(self._statements.queue_stats(), conn)

    def force_unlock_workers(
        self, worker_ids: Sequence[str], *, conn: Connection[Any] | None = None
    ) -> list[int]:
        """Release the jobs of these workers now, as if their lease had expired; returns the
        released job ids."""
        return self._run(self._statements.force_unlock_workers(worker_ids), conn)

    def set_queue_limits(
        self, limits: Mapping[str, int], *, conn: Connection[Any] | None = None
    ) -> None:
        """Set global concurrency limits by queue name or pattern (`{"runs:*": 1}`)."""
        self._run(self._statements.set_queue_limits(limits), conn)

    def set_rate_limits(
        self, limits: Mapping[str, RateLimit | str | None], *, conn: Connection[Any] | None = None
    ) -> None:
        """Set rate limits by queue name or pattern (`{"emails": "100/min", "api:*": "10/s"}`;
        None removes one): at most so many job starts in any window, across every worker. A
        pattern's limit holds for each queue it matches on its own."""
        self._run(self._statements.set_rate_limits(limits), conn)

    def pause_queue(self, queue_name: str, *, conn: Connection[Any] | None = None) -> None:
        """No worker takes jobs from this queue until it is resumed (running ones finish)."""
        self._run(self._statements.pause_queue(queue_name), conn)

    def resume_queue(self, queue_name: str, *, conn: Connection[Any] | None = None) -> None:
        self._run(self._statements.resume_queue(queue_name), conn)

    def queue_known(self, queue_name: str, *, conn: Connection[Any] | None = None) -> bool:
        """Whether the queue has jobs or a row (it had jobs recently, or was paused), or a limit
        policy matches its name."""
        return self._run(self._statements.queue_known(queue_name), conn)

    def unhandled_tasks(self, *, conn: Connection[Any] | None = None) -> list[dict[str, Any]]:
        """Tasks with ready jobs that no live worker takes (no handler for the task, or none
        serving the queue): task_identifier, ready, oldest_run_at, queue_names."""
        return self._run(self._statements.unhandled_tasks(), conn)

    def add_workflow(
        self, workflow: Workflow, *, conn: Connection[Any] | None = None
    ) -> WorkflowRun:
        """Enqueue a workflow's steps in one transaction (see kongflow.engine.workflows): each
        runs when the steps and jobs it comes after completed. A cycle, a step after an unknown
        step, or a step with a job key is refused, and nothing is written."""
        return self._run(self._statements.add_workflow(workflow), conn)

    def workflow_jobs(
        self, workflow_id: int, *, conn: Connection[Any] | None = None
    ) -> dict[str, Job]:
        """Each step's job as it is now (state `blocked` while it waits for its dependencies),
        by step name; empty for an unknown workflow."""
        return self._run(self._statements.workflow_jobs(workflow_id), conn)

    def dependency_results(
        self, job: Job | int, *, conn: Connection[Any] | None = None
    ) -> dict[str, Any]:
        """What the jobs a job depends on returned: by step name in its workflow (by job id as
        text for a dependency outside it), for those that completed and are kept."""
        job_id = job.id if isinstance(job, Job) else job
        return self._run(self._statements.dependency_results(job_id), conn)

    def wait_for(self, job: Job | int, *, timeout: float | None = None) -> Any:
        """The result of the job (a `Job`, or its id) once it completes, from any process:
        woken when it settles, not by polling (on a LISTEN connection of its own). Raises
        JobFailed when it fails for good, JobCancelled when it is cancelled, JobGone when it is
        not in the database, WaitTimeout after `timeout` seconds (None: no limit)."""
        job_id = job.id if isinstance(job, Job) else job
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._connection() as conn:
            dsn, password = conn.info.dsn, conn.info.password
        kwargs = connection_kwargs(self._prepared_statements)
        with psycopg.connect(dsn, password=password, **kwargs) as listener:
            channel = channels(self.schema)["settled"]
            listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
            wait_id = self._run(self._statements.register_wait(job_id), None)
            settled = False
            try:
                while True:
                    done, result = outcome(job_id, self.get_job(job_id), settled)
                    if done:
                        return result
                    settled = _announced(listener, job_id, deadline)
                    if not settled:
                        raise WaitTimeout(job_id, timeout or 0)
            finally:
                self._run(self._statements.unregister_wait(wait_id), None)

    def _connection(self) -> AbstractContextManager[Connection[Any]]:
        """Where a call without `conn` runs: a connection of the pool, in autocommit."""
        return self.pool.connection()

    def _run(self, statement: Statement[T], conn: Connection[Any] | None) -> T:
        if statement.query is None:
            rows: list[Any] = []
        elif conn is None:
            with self._connection() as own:
                rows = fetch_sync(own, statement)
        elif isinstance(conn, Connection):
            rows = fetch_sync(conn, statement)
        else:
            raise TypeError(f"conn must be a psycopg (synchronous) Connection, got {conn!r}")
        return self._answer(statement, rows)


def migrate_blocking(
    dsn: str,
    password: str | None,
    schema: str,
    components: Sequence[tuple[str, str]] = (ENGINE_COMPONENT,),
) -> list[Migration]:
    """`migrate` for synchronous callers: on a connection of its own to `dsn`, in a thread of its
    own, so that it works from inside a running event loop too (an async Django view, a
    notebook)."""

    async def run() -> list[Migration]:
        kwargs = connection_kwargs(prepared_statements=False)  # one migration: nothing to reuse
        conn = await psycopg.AsyncConnection.connect(dsn, password=password, **kwargs)
        async with conn:
            return await migrate(conn, schema, list(components))

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kongflow-migrate") as pool:
        return pool.submit(asyncio.run, run()).result()


def _announced(listener: Connection[Any], job_id: int, deadline: float | None) -> bool:
    """Whether `job_id` is announced as settled on `listener` before `deadline`."""
    while deadline is None or time.monotonic() < deadline:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        for notify in listener.notifies(timeout=remaining, stop_after=1):
            if job_id in announced_ids(notify.payload):
                return True
    return False
