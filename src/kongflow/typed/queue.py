"""The worker queue: a typed catalog over the engine (trigger.dev's ZodWorker).

Payloads are validated when enqueued and again when run; queue names and job keys may derive from
the payload; enqueue can join the caller's transaction. A payload model that names its task
(`TaskPayload`) is enqueued as it is, so a renamed field or task fails type checking, not a job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar, TypedDict, overload

from psycopg import AsyncConnection
from pydantic import BaseModel, ValidationError
from typing_extensions import Unpack

from kongflow.engine.client import AnyConnection, Client
from kongflow.engine.cron import CronItem
from kongflow.engine.errors import PermanentFailure
from kongflow.engine.models import Job, JobKeyMode
from kongflow.engine.tasks import DEFAULT_RETRY, RunningJob, Task
from kongflow.engine.worker import Worker
from kongflow.typed.task import (
    CronPayload,
    InvalidPayloadError,
    NoHandlerError,
    RecurringTask,
    TaskDefinition,
    TypedHandler,
    UnknownTaskError,
)

Catalog = Mapping[str, TaskDefinition[Any]]


class TaskPayload(BaseModel):
    """A payload model that knows its task: `await queue.enqueue(StartRun(id=run_id))`.

    Subclasses set `task` to the catalog identifier they are the payload of; a base shared by
    several tasks leaves it unset and cannot be enqueued by itself."""

    task: ClassVar[str]


class EnqueueOptions(TypedDict, total=False):
    """Per-call enqueue options (they beat the task's defaults, see TaskDefinition)."""

    run_at: datetime | None
    priority: int | None
    queue_name: str | None
    job_key: str | None
    job_key_mode: JobKeyMode | None
    max_attempts: int | None
    flags: Sequence[str] | None


_NO_PAYLOAD: Any = object()


class WorkerQueue:
    """Enqueue typed jobs and run their handlers.

    `handlers` registers (or overrides) handlers by task identifier; a catalog task with no
    handler is refused at enqueue. `worker_options` go to the engine's Worker (concurrency,
    queue_limits, lease, hooks, ...)."""

    def __init__(
        self,
        catalog: Catalog,
        database: str | None = None,
        *,
        handlers: Mapping[str, TypedHandler] | None = None,
        recurring: Mapping[str, RecurringTask] | None = None,
        schema: str | None = None,
        client: Client | None = None,
        **worker_options: Any,
    ) -> None:
        for identifier in handlers or {}:
            if identifier not in catalog:
                raise UnknownTaskError(identifier, list(catalog))
        self.catalog = dict(catalog)
        self.handlers: dict[str, TypedHandler] = {
            identifier: handler
            for identifier, definition in catalog.items()
            if (handler := (handlers or {}).get(identifier) or definition.handler) is not None
        }
        self.recurring = dict(recurring or {})
        clash = set(self.recurring) & set(self.catalog)
        if clash:
            raise ValueError(f"recurring task names clash with catalog tasks: {sorted(clash)}")
        self.client = client or Client(database, schema=schema)
        self._owns_client = client is None
        self._worker_options = worker_options
        self.worker: Worker | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> WorkerQueue:
        """Connect (and migrate) without running jobs: enough to enqueue."""
        if self._owns_client and not self.client.is_open:
            await self.client.open()
        return self

    async def start(self) -> None:
        """Start running the registered handlers."""
        await self.open()
        if not self.handlers and not self.recurring:
            raise NoHandlerError("(any)")
        tasks = {identifier: self._task(identifier) for identifier in self.handlers}
        tasks |= {name: _recurring_task(name, r) for name, r in self.recurring.items()}
        cron = [
            CronItem(r.pattern, name, fill=r.fill, max_attempts=r.max_attempts)
            for name, r in self.recurring.items()
        ]
        self.worker = Worker(
            self.client.pool,
            tasks,
            schema=self.client.schema,
            migrate=False,
            crontab=cron,
            **self._worker_options,
        )
        await self.worker.start()

    async def stop(self, timeout: float = 30.0) -> None:
        if self.worker is not None:
            await self.worker.stop(timeout)
            self.worker = None
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> WorkerQueue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- enqueue -----------------------------------------------------------------------------

    def validate(self, identifier: str, payload: Any) -> BaseModel:
        """The payload as its task's model; raises if the task is unknown or the payload bad."""
        definition = self.catalog.get(identifier)
        if definition is None:
            raise UnknownTaskError(identifier, list(self.catalog))
        if isinstance(payload, BaseModel) and isinstance(payload, definition.payload):
            return payload
        try:
            data = payload.model_dump(by_alias=True) if isinstance(payload, BaseModel) else payload
            model: BaseModel = definition.payload.model_validate(data)
        except ValidationError as exc:
            raise InvalidPayloadError(identifier, exc) from None
        return model

    @overload
    async def enqueue(
        self,
        identifier: TaskPayload,
        *,
        tx: AnyConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job: ...

    @overload
    async def enqueue(
        self,
        identifier: str,
        payload: Any,
        *,
        tx: AnyConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job: ...

    async def enqueue(
        self,
        identifier: str | TaskPayload,
        payload: Any = _NO_PAYLOAD,
        *,
        tx: AnyConnection | None = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Validate and enqueue; `tx` joins the caller's transaction. Either a task's payload
        model (`enqueue(StartRun(id=...))`) or an identifier and its payload as data."""
        arguments = self._job_arguments(identifier, payload, **options)
        return await self.client.add_job(**arguments, conn=tx)

    def add_job_call(
        self, payload: TaskPayload, **options: Unpack[EnqueueOptions]
    ) -> tuple[str, dict[str, Any]]:
        """The job `enqueue(payload, ...)` would add, as an SQL expression and its parameters
        (see `Client.add_job_call`), to enqueue in the same statement as the rows it is for."""
        return self.client.add_job_call(**self._job_arguments(payload, _NO_PAYLOAD, **options))

    def _job_arguments(
        self,
        identifier: str | TaskPayload,
        payload: Any,
        *,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue_name: str | None = None,
        job_key: str | None = None,
        job_key_mode: JobKeyMode | None = None,
        max_attempts: int | None = None,
        flags: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The job's add_job arguments: the payload validated, the catalog's defaults applied."""
        if isinstance(identifier, TaskPayload):
            if payload is not _NO_PAYLOAD:
                raise TypeError("a TaskPayload names its task: pass it alone, without a payload")
            identifier, model = self._typed(identifier)
        elif payload is _NO_PAYLOAD:
            raise TypeError(f"enqueue({identifier!r}) needs a payload")
        else:
            model = self.validate(identifier, payload)
        if identifier not in self.handlers:
            raise NoHandlerError(identifier)
        definition = self.catalog[identifier]
        return {
            "identifier": identifier,
            "payload": model.model_dump(mode="json", by_alias=True, exclude_none=True),
            "queue_name": _resolve(definition.queue_name, queue_name, model),
            "job_key": _resolve(definition.job_key, job_key, model),
            "run_at": run_at,
            "priority": priority if priority is not None else definition.priority,
            "max_attempts": max_attempts if max_attempts is not None else definition.max_attempts,
            "job_key_mode": job_key_mode or definition.job_key_mode or "replace",
            "flags": flags if flags is not None else definition.flags,
        }

    def _typed(self, payload: TaskPayload) -> tuple[str, BaseModel]:
        """The task a payload model names, checked against the catalog's model for it."""
        identifier = getattr(type(payload), "task", None)
        if not isinstance(identifier, str):
            raise TypeError(f"{type(payload).__name__} names no task (it has no `task`)")
        definition = self.catalog.get(identifier)
        if definition is None:
            raise UnknownTaskError(identifier, list(self.catalog))
        if not isinstance(payload, definition.payload):
            raise TypeError(
                f"task {identifier!r} takes a {definition.payload.__name__}, "
                f"not a {type(payload).__name__}"
            )
        return identifier, payload

    async def dequeue(self, job_key: str, *, tx: AnyConnection | None = None) -> Job | None:
        """Remove the pending job with this key (a running one will not be retried)."""
        return await self.client.remove_job(job_key, conn=tx)

    async def wait_for(self, job: Job | int, *, timeout: float | None = None) -> Any:
        """What the task's handler returned, once the job completes (see Client.wait_for)."""
        return await self.client.wait_for(job, timeout=timeout)

    @asynccontextmanager
    async def transaction(
        self, conn: AsyncConnection[Any] | None = None
    ) -> AsyncIterator[Transaction]:
        """`async with wq.transaction() as tx:` your SQL on `tx.conn` and `tx.enqueue(...)` commit
        together or not at all. Pass `conn` to use a connection you hold."""
        if conn is not None:
            async with conn.transaction():
                yield Transaction(self, conn)
            return
        async with self.client.pool.connection() as own, own.transaction():
            yield Transaction(self, own)

    # -- running -----------------------------------------------------------------------------

    def _task(self, identifier: str) -> Task:
        definition = self.catalog[identifier]
        handler = self.handlers[identifier]

        async def run(payload: Any, job: RunningJob) -> Any:
            try:
                model = definition.payload.model_validate(payload)
            except ValidationError as exc:
                # Retrying cannot fix a payload: fail for good, with the reasons.
                raise PermanentFailure(str(InvalidPayloadError(identifier, exc))) from None
            return await handler(model, job)

        return Task(run, timeout=definition.timeout, retry=definition.retry or DEFAULT_RETRY)


class Transaction:
    """A caller's transaction that typed jobs can join."""

    def __init__(self, queue: WorkerQueue, conn: AsyncConnection[Any]) -> None:
        self.queue = queue
        self.conn = conn

    @overload
    async def enqueue(self, identifier: TaskPayload, **options: Unpack[EnqueueOptions]) -> Job: ...

    @overload
    async def enqueue(
        self, identifier: str, payload: Any, **options: Unpack[EnqueueOptions]
    ) -> Job: ...

    async def enqueue(
        self,
        identifier: str | TaskPayload,
        payload: Any = _NO_PAYLOAD,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """`await tx.enqueue(StartRun(id=run_id))`, or `tx.enqueue("startRun", {"id": ...})`."""
        if isinstance(identifier, TaskPayload):
            if payload is not _NO_PAYLOAD:
                raise TypeError("a TaskPayload names its task: pass it alone, without a payload")
            return await self.queue.enqueue(identifier, tx=self.conn, **options)
        return await self.queue.enqueue(identifier, payload, tx=self.conn, **options)

    async def dequeue(self, job_key: str) -> Job | None:
        return await self.queue.dequeue(job_key, tx=self.conn)


def _recurring_task(name: str, recurring: RecurringTask) -> Task:
    async def run(payload: Any, job: RunningJob) -> Any:
        return await recurring.handler(CronPayload.model_validate(payload["_cron"]), job)

    return Task(run, timeout=recurring.timeout)


def _resolve(default: Any, per_call: str | None, model: BaseModel) -> str | None:
    """A function of the payload beats the per-call value, which beats a static default."""
    if callable(default):
        return str(default(model))
    return per_call if per_call is not None else default
