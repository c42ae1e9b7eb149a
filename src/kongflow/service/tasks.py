"""io tasks (trigger.dev v2): what an endpoint's SDK creates, completes and fails while a run
executes, what is sent back on each re-execution so that completed steps are skipped, and the
`resumeTask` job that starts a waiting task and resumes its run when its time has come.

A task is created by its idempotency key (the SDK hashes the run, the parent task and the
step's cache key), so asking again returns the task as stored: that is how a re-executed run
finds the steps it already took."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb

from kongflow.bloom import BloomFilter
from kongflow.engine.errors import KongflowError
from kongflow.engine.tasks import RunningJob
from kongflow.protocol import CachedTask
from kongflow.service.catalog import PerformRunExecution, PerformTaskOperation, ResumeTask
from kongflow.service.database import Connection, Database
from kongflow.service.environments import Environment
from kongflow.service.rows import Json, Task
from kongflow.service.runs import TERMINAL, execution_key
from kongflow.typed import Transaction, WorkerQueue
from kongflow.typed.task import TypedHandler

#: The cached tasks sent with an execution, and with each lazily loaded page (trigger.dev's).
EXECUTION_CACHE_BYTES = 3_500_000
PAGE_CACHE_BYTES = 2_000_000
PAGE_SIZE = 250

#: Operations kongflow performs for a task (io.backgroundFetch, backgroundFetchResponse).
FETCH_OPERATIONS = frozenset({"fetch", "fetch-response"})
FINISHED = frozenset({"COMPLETED", "ERRORED", "CANCELED"})


def performed_by_kongflow(task: Task) -> bool:
    """A RUNNING task whose operation kongflow performs (io.backgroundFetch's request)."""
    return task.status == "RUNNING" and task.operation in FETCH_OPERATIONS


class TaskError(KongflowError, ValueError):
    """A task request that cannot be taken (a parent from another run, output that is not
    JSON); the API answers 400 with this message."""


@dataclass(frozen=True)
class NewTask:
    """A task as the SDK asks for it (trigger.dev's RunTaskBody)."""

    idempotency_key: str
    name: str = "Task"
    display_key: str | None = None
    icon: str | None = None
    description: str | None = None
    noop: bool = False
    params: Json = None
    properties: Json = None
    style: Json = None
    delay_until: datetime | None = None
    operation: str | None = None
    parent_id: str | None = None
    parallel: bool = False
    callback: bool = False


@dataclass(frozen=True)
class TaskCache:
    """Completed tasks for the SDK's cache, and where the next page starts (None: no more)."""

    tasks: list[CachedTask]
    cursor: str | None


class TaskService:
    def __init__(self, queue: WorkerQueue, database: Database) -> None:
        self.queue = queue
        self.database = database
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {ResumeTask.task: self.resume_task}

    # -- the SDK's calls ---------------------------------------------------------------------

    async def run_task(self, environment: Environment, run_id: str, new: NewTask) -> Task | None:
        """The run's task for this idempotency key, created if new: CANCELED if the run was
        cancelled, WAITING until a future `delay_until`, COMPLETED if a no-op, else RUNNING
        (with its operation queued, if kongflow performs it). None if the environment has no
        such run."""
        async with self.queue.transaction() as tx:
            task = await self._insert_into_open_run(tx.conn, environment, run_id, new)
            if task is not None:
                if performed_by_kongflow(task):
                    await self.queue_operation(tx, task)
                return task
            async with tx.conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(self._sql.run_for_task, (run_id, environment.id))
                run_status: str | None = await cur.fetchone()
            if run_status is None:
                return None
            existing = await self._task_by_key(tx.conn, run_id, new.idempotency_key)
            if existing is not None:
                if existing.status == "CANCELED" and run_status not in TERMINAL:
                    return await self._restart(tx.conn, existing, new)
                return existing
            status, error = self._initial_status(new, run_status)
            async with tx.conn.cursor(row_factory=class_row(Task)) as cur:
                await cur.execute(
                    self._sql.insert_task, self._insert_params(run_id, new, status, error)
                )
                task = await cur.fetchone()
            if task is None:
                # A concurrent request took the key, or the parent is not this run's.
                task = await self._task_by_key(tx.conn, run_id, new.idempotency_key)
                if task is None:
                    raise TaskError(f"task {new.parent_id!r} is not a task of run {run_id}")
                return task
            if performed_by_kongflow(task):
                await self.queue_operation(tx, task)
        return task

    async def complete_task(
        self,
        environment: Environment,
        run_id: str,
        task_id: str,
        output: Json,
        properties: Json = None,
    ) -> Task | None:
        """COMPLETED with its output; a finished task is returned as it is. None if the run
        has no such task."""
        async with self.database.connection() as conn:
            task = await self.complete(
                conn, run_id, task_id, output, properties, environment_id=environment.id
            )
            if task is None:  # finished already, or not a task of the environment's run
                task = await self._lock(conn, environment, run_id, task_id)
            return task

    async def fail_task(
        self, environment: Environment, run_id: str, task_id: str, error: dict[str, Any]
    ) -> Task | None:
        """ERRORED, its output the error; a finished task is returned as it is."""
        async with self.database.connection() as conn:
            task = await self._lock(conn, environment, run_id, task_id)
            if task is None or task.status in FINISHED:
                return task
            return await self.fail(conn, run_id, task_id, error)

    async def complete(
        self,
        conn: Connection,
        run_id: str,
        task_id: str,
        output: Json,
        properties: Json = None,
        *,
        environment_id: str | None = None,
    ) -> Task | None:
        """COMPLETED with `output` (the SDK's completion, or the one an auto-yield carries);
        None if the run (of `environment_id`, if given) has no such open task."""
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(
                self._sql.complete_task,
                {
                    "id": task_id,
                    "run_id": run_id,
                    "output": _jsonb(output),
                    "properties": _jsonb(properties),
                    "environment_id": environment_id,
                },
            )
            return await cur.fetchone()

    async def fail(self, conn: Connection, run_id: str, task_id: str, error: Json) -> Task | None:
        """ERRORED, its output the error; None if the run has no such open task."""
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(
                self._sql.fail_task, {"id": task_id, "run_id": run_id, "output": Jsonb(error)}
            )
            return await cur.fetchone()

    # -- what an execution sends back ----------------------------------------------------------

    async def execution_cache(self, run_id: str, *, executed_before: bool) -> tuple[TaskCache, str]:
        """The run's completed tasks for an execution body (up to 3.5 MB of them; the rest
        lazily, from the cursor), and the bloom filter of its completed no-op tasks. A run's
        first execution has none (tasks are made by executions): nothing to read, four round
        trips saved on every run that needs only one execution."""
        if not executed_before:
            return TaskCache([], None), BloomFilter().serialize()
        async with self.database.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=scalar_row) as keys:
                await keys.execute(self._sql.completed_noop_keys, (run_id,))
                noops = BloomFilter.of(await keys.fetchall())
            # A server-side cursor: rows are read a few at a time, up to the first that does
            # not fit, however many the run has.
            async with conn.cursor("cached_tasks", row_factory=class_row(CachedRow)) as cur:
                await cur.execute(self._sql.completed_tasks, (run_id,))
                cache = await _fill(cur, EXECUTION_CACHE_BYTES)
        return cache, noops.serialize()

    async def cache_page(self, run_id: str, cursor: str) -> TaskCache:
        """The completed tasks from `cursor` on (X-Cached-Tasks-Cursor), a page at a time."""
        async with (
            self.database.connection() as conn,
            conn.transaction(),  # a server-side cursor lives in a transaction
            conn.cursor("cached_tasks", row_factory=class_row(CachedRow)) as cur,
        ):
            await cur.execute(
                self._sql.completed_tasks_from,
                {"run_id": run_id, "cursor": cursor, "limit": PAGE_SIZE},
            )
            return await _fill(cur, PAGE_CACHE_BYTES)

    # -- resuming ------------------------------------------------------------------------------

    async def resume_task(self, payload: ResumeTask, job: RunningJob) -> None:
        """A waiting task's time has come: a no-op (io.wait) completes, another task runs
        again (its retry), or has its operation performed; then its run is re-executed, once
        all of a parallel parent's children are done. Locks the run, then the task (the order
        of every other writer: task creation, cancel, an execution's end)."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=class_row(Task)) as cur:
                await cur.execute(self._sql.task_by_id, (payload.id,))
                found = await cur.fetchone()
                if found is None:
                    return
                await self.lock_run(tx.conn, found.run_id)
                await cur.execute(self._sql.lock_task, (payload.id,))
                task = await cur.fetchone()
                if task is None:
                    return
                if task.status == "WAITING":
                    await cur.execute(self._sql.start_waiting_task, (task.id,))
                    task = await cur.fetchone() or task
            if performed_by_kongflow(task):
                await self.queue_operation(tx, task)  # it resumes the run when it is done
                return
            if task.parent_id is not None and await self._siblings_waiting(tx.conn, task):
                return
            await self.resume_run(tx, task.run_id)

    async def _siblings_waiting(self, conn: Connection, task: Task) -> bool:
        """Whether a parallel parent has other children still waiting (on time, a retry or
        an operation): the last of them to finish resumes the run."""
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(self._sql.lock_task, (task.parent_id,))
            parent = await cur.fetchone()
        if parent is None or not parent.parallel:
            return False
        async with conn.cursor(row_factory=scalar_row) as count:
            await count.execute(self._sql.waiting_siblings, (parent.id, task.id))
            waiting: int | None = await count.fetchone()
        return bool(waiting)

    async def lock_run(self, conn: Connection, run_id: str) -> str | None:
        """The run's status, its row locked for the rest of the transaction."""
        async with conn.cursor(row_factory=scalar_row) as cur:
            await cur.execute(self._sql.lock_run_status, (run_id,))
            status: str | None = await cur.fetchone()
        return status

    async def resume_run(self, tx: Transaction, run_id: str) -> None:
        """Re-execute a run that waits on its tasks (a cancelled or finished one stays)."""
        async with tx.conn.cursor(row_factory=scalar_row) as cur:
            await cur.execute(self._sql.run_status, (run_id,))
            status: str | None = await cur.fetchone()
        if status == "WAITING_TO_CONTINUE":
            await tx.enqueue(PerformRunExecution(id=run_id), job_key=execution_key(run_id))

    async def queue_operation(self, tx: Transaction, task: Task) -> None:
        """Perform a RUNNING task's operation now (its delay, if it had one, is over)."""
        await tx.enqueue(PerformTaskOperation(id=task.id), job_key=f"operation:{task.id}")

    # -- helpers -------------------------------------------------------------------------------

    def _initial_status(self, new: NewTask, run_status: str) -> tuple[str, str | None]:
        if run_status in TERMINAL:  # cancelled, or a late call for a run that is over
            return "CANCELED", None
        if new.callback:
            return "ERRORED", (
                f"task {new.name!r} waits for a callback (io.waitForRequest, io.waitForEvent),"
                " which kongflow does not support"
            )
        if new.operation is not None and new.operation not in FETCH_OPERATIONS:
            return "ERRORED", f"operation {new.operation!r} is not supported by kongflow"
        if new.delay_until is not None and new.delay_until > datetime.now(UTC):
            return "WAITING", None
        return ("COMPLETED" if new.noop else "RUNNING"), None

    def _insert_params(
        self, run_id: str, new: NewTask, status: str, error: str | None
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "key": new.idempotency_key,
            "display_key": new.display_key,
            "name": new.name,
            "icon": new.icon,
            "description": new.description,
            "status": status,
            "noop": new.noop,
            "params": _jsonb(new.params),
            "properties": _jsonb(new.properties),
            "style": Jsonb(new.style if new.style is not None else {"style": "normal"}),
            "operation": new.operation,
            "parent_id": new.parent_id,
            "parallel": new.parallel,
            "delay_until": new.delay_until,
            "error": error,
            "output": Jsonb({"message": error}) if error is not None else None,
        }

    async def _insert_into_open_run(
        self, conn: Connection, environment: Environment, run_id: str, new: NewTask
    ) -> Task | None:
        """A new task of a run still open, in one statement; None if that is not the case
        (the run is over or not the environment's, the key is taken, a foreign parent)."""
        status, error = self._initial_status(new, "EXECUTING")
        params = self._insert_params(run_id, new, status, error)
        params |= {"environment_id": environment.id, "terminal": sorted(TERMINAL)}
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(self._sql.insert_task_of_open_run, params)
            return await cur.fetchone()

    async def _restart(self, conn: Connection, task: Task, new: NewTask) -> Task | None:
        status, _ = self._initial_status(new, "EXECUTING")
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(self._sql.restart_task, {"id": task.id, "status": status})
            return await cur.fetchone()

    async def _task_by_key(self, conn: Connection, run_id: str, key: str) -> Task | None:
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(self._sql.task_by_key, (run_id, key))
            return await cur.fetchone()

    async def _lock(
        self, conn: Connection, environment: Environment, run_id: str, task_id: str
    ) -> Task | None:
        async with conn.cursor(row_factory=class_row(Task)) as cur:
            await cur.execute(self._sql.lock_task_of_run, (task_id, run_id, environment.id))
            return await cur.fetchone()


@dataclass(frozen=True)
class CachedRow:
    id: str
    idempotency_key: str
    status: str
    noop: bool
    output: Json
    parent_id: str | None


def parse_output(text: str | None) -> Json:
    """A task's output as the SDK serialises it (a JSON string; absent for undefined)."""
    if not text:
        return None
    try:
        value: Json = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise TaskError(f"the task's output is not JSON: {exc}") from None
    except RecursionError:
        raise TaskError("the task's output nests too deeply") from None
    return value


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


async def _fill(rows: AsyncIterator[CachedRow], limit: int) -> TaskCache:
    """Tasks in order while they fit in `limit` bytes (as JSON); the cursor is the first one
    left out."""
    tasks: list[CachedTask] = []
    room = limit
    async for row in rows:
        cached = CachedTask(
            id=row.idempotency_key,  # trigger.dev sends the key as the cached task's id
            idempotency_key=row.idempotency_key,
            status=row.status,
            noop=row.noop,
            output=row.output,
            parent_id=row.parent_id,
        )
        size = len(json.dumps(cached.wire(), separators=(",", ":")))
        if size > room:
            return TaskCache(tasks, row.id)
        tasks.append(cached)
        room -= size
    return TaskCache(tasks, None)


def _jsonb(value: Json) -> Jsonb | None:
    return Jsonb(value) if value is not None else None
