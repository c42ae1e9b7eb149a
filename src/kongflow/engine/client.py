"""The engine's write side: enqueue and administer jobs, alone or inside the caller's transaction.

Every method takes an optional `conn`, a psycopg connection (async or sync) of the caller: the
statement then runs in the caller's transaction and commits or rolls back with it, and workers are
woken (NOTIFY) only when it commits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection, Connection
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from kongflow.engine.bulk import copy_jobs
from kongflow.engine.errors import InvalidJobError
from kongflow.engine.migrate import ENGINE_COMPONENT, migrate
from kongflow.engine.models import (
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    Job,
    JobKeyMode,
    JobSpec,
    check_int,
    check_job_key_mode,
    check_optional_text,
    check_payload_text,
    check_run_at,
    encode_payload,
    may_hold_bad_text,
)
from kongflow.engine.pool import open_pool
from kongflow.engine.sql import engine_sql
from kongflow.engine.tracing import enqueue_span
from kongflow.settings import DEFAULT_SCHEMA, validate_schema

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    from kongflow.engine.metrics import Metrics

AnyConnection = AsyncConnection[Any] | Connection[Any]


class Client:
    """A handle on one kongflow schema: `async with Client(url) as client: ...`.

    With no URL it uses DATABASE_URL, else the embedded PostgreSQL. Opening it applies pending
    migrations (the engine's, and those of the layers named in `components`) unless
    `migrate=False`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool: AsyncConnectionPool[Any] | None = None,
        max_connections: int = 10,
        migrate: bool = True,
        metrics: Metrics | None = None,
        components: Sequence[tuple[str, str]] = (ENGINE_COMPONENT,),
    ) -> None:
        self.schema = validate_schema(schema)
        self._database_url = database_url
        self._pool = pool
        self._owns_pool = pool is None
        self._max_connections = max_connections
        self._migrate = migrate
        self._components = list(components)
        self._metrics = metrics
        self._sql = engine_sql(self.schema)

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise RuntimeError("the client is not open: use `async with Client(...)` or open()")
        return self._pool

    async def open(self) -> Client:
        if self._pool is None:
            self._pool = await open_pool(
                self._database_url,
                purpose="client",
                min_size=1,
                max_size=self._max_connections,
            )
        if self._migrate:
            await self.migrate()
        return self

    async def close(self) -> None:
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
        params = JobSpec(
            identifier, payload, queue_name, run_at, max_attempts, job_key, priority, flags
        ).validated()
        params["job_key_mode"] = check_job_key_mode(job_key_mode)
        with enqueue_span(identifier, queue_name) as headers:
            params["headers"] = Jsonb(headers) if headers else None
            (job,) = await self._fetch(self._sql.add_job, params, conn)
        if self._metrics is not None:
            self._metrics.record_enqueued([job])
        return job

    async def add_jobs(
        self,
        specs: Iterable[JobSpec],
        *,
        job_key_preserve_run_at: bool = False,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Enqueue many jobs in one statement and one NOTIFY; built for 100k+ jobs a call."""
        document = _bulk_document(specs)
        if document is None:
            return []
        jobs = await self._fetch(self._sql.add_jobs, (document, job_key_preserve_run_at), conn)
        if self._metrics is not None:
            self._metrics.record_enqueued(jobs)
        return jobs

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
            return await self._add_jobs_counted(specs, job_key_preserve_run_at, conn)
        rows = _validated(specs, encode=True)
        if conn is None:
            async with self.pool.connection() as own:
                counts = await copy_jobs(own, self._sql, rows)
        else:
            counts = await copy_jobs(conn, self._sql, rows)
        if self._metrics is not None:
            self._metrics.record_enqueued_counts(
                (task, queue, count) for (task, queue), count in counts.items()
            )
        return len(rows)

    async def _add_jobs_counted(
        self, specs: list[JobSpec], job_key_preserve_run_at: bool, conn: AnyConnection | None
    ) -> int:
        document = _bulk_document(specs)
        if document is None:
            return 0
        counts = await self._rows(
            self._sql.add_jobs_counted, (document, job_key_preserve_run_at), conn
        )
        if self._metrics is not None:
            self._metrics.record_enqueued_counts(counts)
        return sum(count for _, _, count in counts)

    async def remove_job(self, job_key: str, *, conn: AnyConnection | None = None) -> Job | None:
        """Delete the job with this key if it is not running; a running one loses its key and
        will not be retried. Returns the job, or None when no job has the key."""
        check_optional_text(job_key, "job_key", "", MAX_KEY_LENGTH)
        return _first(await self._fetch(self._sql.remove_job, (job_key,), conn))

    async def complete_jobs(
        self, job_ids: Sequence[int], *, conn: AnyConnection | None = None
    ) -> list[Job]:
        """Mark jobs completed; running jobs are left alone."""
        return await self._fetch(self._sql.complete_jobs, (_ids(job_ids),), conn)

    async def permanently_fail_jobs(
        self,
        job_ids: Sequence[int],
        message: str | None = None,
        *,
        conn: AnyConnection | None = None,
    ) -> list[Job]:
        """Fail jobs for good (no more retries); running jobs are left alone."""
        return await self._fetch(self._sql.permanently_fail_jobs, (_ids(job_ids), message), conn)

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
        params = {
            "ids": _ids(job_ids),
            "run_at": check_run_at(run_at),
            "priority": check_int(priority, "priority", "", -(2**31), 2**31 - 1),
            "attempts": check_int(attempts, "attempts", "", 0, 32767),
            "max_attempts": check_int(max_attempts, "max_attempts", "", 1, 32767),
        }
        return await self._fetch(self._sql.reschedule_jobs, params, conn)

    async def get_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """A job in any state, including completed and cancelled ones still retained."""
        return _first(await self._fetch(self._sql.get_job, (job_id,), conn))

    async def cancel_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """Cancel a job: at once if it is not running, else its worker is asked to stop it and
        it will not be retried. Returns the job, or None if there is no such job."""
        return _first(await self._fetch(self._sql.cancel_job, (job_id,), conn))

    async def retry_job(self, job_id: int, *, conn: AnyConnection | None = None) -> Job | None:
        """Run a job that is not running now; a permanently failed one gets one more attempt.
        Returns None when there is no such job waiting (running, finished or unknown)."""
        job = _first(await self._fetch(self._sql.retry_job, (job_id,), conn))
        return job if job is not None and job.state != "running" else None

    async def delete_jobs(
        self, job_ids: Sequence[int], *, conn: AnyConnection | None = None
    ) -> list[int]:
        """Delete jobs that are not running (finished ones too); returns the deleted ids."""
        (row,) = await self._rows(self._sql.delete_jobs, (_ids(job_ids),), conn)
        return list(row[0])

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
        params = {"state": state, "task": task, "queue": queue, "limit": limit}
        return await self._fetch(self._sql.list_jobs, params, conn)

    async def queue_stats(self, *, conn: AnyConnection | None = None) -> list[dict[str, Any]]:
        """Per queue: jobs by state, oldest available time, limit, paused."""
        return await self._rows(self._sql.queue_stats, None, conn, dict_row)

    async def force_unlock_workers(
        self, worker_ids: Sequence[str], *, conn: AnyConnection | None = None
    ) -> list[int]:
        """Release the jobs of these workers now, as if their lease had expired; returns the
        released job ids."""
        (row,) = await self._rows(self._sql.force_unlock_workers, (list(worker_ids),), conn)
        return list(row[0])

    async def set_queue_limits(
        self, limits: Mapping[str, int], *, conn: AnyConnection | None = None
    ) -> None:
        """Set global concurrency limits by queue name or pattern (`{"runs:*": 1}`)."""
        for name, limit in limits.items():
            check_int(limit, f"limits[{name!r}]", "", 1, 2**31 - 1)
        await self._rows(self._sql.set_queue_limits, (json.dumps(dict(limits)),), conn)

    async def pause_queue(self, queue_name: str, *, conn: AnyConnection | None = None) -> None:
        """No worker takes jobs from this queue until it is resumed (running ones finish)."""
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        await self._rows(self._sql.pause_queue, (queue_name,), conn)

    async def resume_queue(self, queue_name: str, *, conn: AnyConnection | None = None) -> None:
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        await self._rows(self._sql.resume_queue, (queue_name,), conn)

    async def queue_known(self, queue_name: str, *, conn: AnyConnection | None = None) -> bool:
        """Whether the queue has jobs or a row (it had jobs recently, or was paused), or a limit
        policy matches its name."""
        check_optional_text(queue_name, "queue_name", "", MAX_NAME_LENGTH)
        ((known,),) = await self._rows(self._sql.queue_known, {"name": queue_name}, conn)
        return bool(known)

    async def unhandled_tasks(self, *, conn: AnyConnection | None = None) -> list[dict[str, Any]]:
        """Tasks with ready jobs that no live worker takes (no handler for the task, or none
        serving the queue): task_identifier, ready, oldest_run_at, queue_names."""
        return await self._rows(self._sql.unhandled_tasks, None, conn, dict_row)

    async def _fetch(self, query: str, params: Any, conn: AnyConnection | None) -> list[Job]:
        return await self._rows(query, params, conn, Job.row_factory)

    async def _rows(
        self, query: str, params: Any, conn: AnyConnection | None, row_factory: Any = tuple_row
    ) -> list[Any]:
        if conn is None:
            async with self.pool.connection() as own:
                return await _fetch_async(own, query, params, row_factory)
        if isinstance(conn, AsyncConnection):
            return await _fetch_async(conn, query, params, row_factory)
        if isinstance(conn, Connection):
            return await asyncio.to_thread(_fetch_sync, conn, query, params, row_factory)
        raise TypeError(f"conn must be a psycopg Connection or AsyncConnection, got {conn!r}")


async def _fetch_async(
    conn: AsyncConnection[Any], query: str, params: Any, row_factory: Any
) -> list[Any]:
    async with conn.cursor(row_factory=row_factory) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _fetch_sync(conn: Connection[Any], query: str, params: Any, row_factory: Any) -> list[Any]:
    with conn.cursor(row_factory=row_factory) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _validated(specs: Sequence[JobSpec], *, encode: bool) -> list[dict[str, Any]]:
    """Every spec checked; an error names the spec (`specs[3].priority`)."""
    try:
        return [spec.validated(encode=encode) for spec in specs]
    except (InvalidJobError, AttributeError):
        pass  # checked again one by one, to name the culprit (the rare path)
    for index, spec in enumerate(specs):
        if not isinstance(spec, JobSpec):
            raise TypeError(f"specs[{index}] must be a JobSpec, got {type(spec).__name__}")
        spec.validated(f"specs[{index}].", encode=encode)
    raise AssertionError("unreachable: a spec failed without a second failure")


def _bulk_document(specs: Iterable[JobSpec]) -> str | None:
    """The specs, checked, as the JSON array `add_jobs` takes; None when there are none."""
    specs = list(specs)
    rows = _validated(specs, encode=False)
    if not rows:
        return None
    try:
        document = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        for index, spec in enumerate(specs):  # name the culprit
            encode_payload(spec.payload, f"specs[{index}].")
        raise
    if may_hold_bad_text(document):  # the other fields were checked as they are
        for index, spec in enumerate(specs):
            check_payload_text(spec.payload, f"specs[{index}].")
    return document


def _first(jobs: list[Job]) -> Job | None:
    return jobs[0] if jobs else None


def _ids(job_ids: Sequence[int]) -> list[int]:
    ids = list(job_ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError(f"job ids must be integers, got {ids!r:.200}")
    return ids
