"""What the API answers on success, as models: the OpenAPI schema documents them, and each is
built from the service's typed rows in one place. camelCase on the wire (trigger.dev's form);
times are ISO 8601 as `datetime.isoformat()` writes them, or null."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer
from pydantic.alias_generators import to_camel

from kongflow.protocol import iso_time
from kongflow.service.notifications import io_status
from kongflow.service.rows import Endpoint as EndpointRow
from kongflow.service.rows import EventRecord, IoStatus, Run, RunListing, Task, TaskLine
from kongflow.service.runs import QueuedRun as QueuedRunRow
from kongflow.service.tasks import TaskCache


class Answer(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Sparse(Answer):
    """An answer whose `OMITTED` fields are left out when None: trigger.dev's SDK takes an
    absent key where it refuses null."""

    OMITTED: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self.OMITTED:
            for key in (name, to_camel(name)):  # as dumped by name or by alias
                if key in data and data[key] is None:
                    del data[key]
        return data


class QueuedRun(Answer):
    """A run created by a test or an invocation, queued to start."""

    id: str
    run_id: str
    event_id: str
    status: str
    message: str

    @classmethod
    def of(cls, queued: QueuedRunRow) -> QueuedRun:
        return cls(
            id=queued.run_id,
            run_id=queued.run_id,
            event_id=queued.event_id,
            status=queued.status,
            message=queued.message,
        )


class TaskSummary(Sparse):
    """A task as a run read shows it (trigger.dev's RunTaskSchema): every key present but
    `subtasks`, there only when asked for."""

    OMITTED = frozenset({"subtasks"})

    id: str
    display_key: str | None
    status: str
    name: str
    icon: str | None
    started_at: str | None
    completed_at: str | None
    subtasks: list[TaskSummary] | None = None

    @classmethod
    def of(cls, task: TaskLine) -> TaskSummary:
        return cls(
            id=task.id,
            display_key=task.display_key,
            status=task.status,
            name=task.name,
            icon=task.icon,
            started_at=iso_time(task.started_at),
            completed_at=iso_time(task.completed_at),
        )


def task_tree(tasks: Sequence[TaskLine], *, subtasks: bool) -> list[TaskSummary]:
    """The top-level tasks in creation order, each with its subtasks if asked for (down to
    MAX_TASK_DEPTH levels: an answer nested deeper could not be written)."""
    if not subtasks:
        return [TaskSummary.of(t) for t in tasks if t.parent_id is None]
    children: dict[str, list[TaskLine]] = {}
    for task in tasks:
        if task.parent_id is not None:
            children.setdefault(task.parent_id, []).append(task)

    def node(task: TaskLine, depth: int) -> TaskSummary:
        summary = TaskSummary.of(task)
        below = children.get(task.id, []) if depth < MAX_TASK_DEPTH else []
        summary.subtasks = [node(child, depth + 1) for child in below]
        return summary

    return [node(t, 1) for t in tasks if t.parent_id is None]


MAX_TASK_DEPTH = 32


class IoStatusAnswer(Sparse):
    """An io status (trigger.dev's JobRunStatusRecord)."""

    OMITTED = frozenset({"state", "data"})

    key: str
    label: str
    state: str | None = None
    data: Any = None
    history: list[Any]

    @classmethod
    def of(cls, status: IoStatus) -> IoStatusAnswer:
        return cls.model_validate(io_status(status))


class RunAnswer(Answer):
    id: str
    job_id: str
    version: str
    number: int | None
    status: str
    is_test: bool
    output: Any
    event_id: str
    created_at: str | None
    queued_at: str | None
    started_at: str | None
    completed_at: str | None
    updated_at: str | None
    execution_count: int
    execution_duration_in_ms: int
    tasks: list[TaskSummary] = []  # the run's io tasks, as trigger.dev's SDK reads a run
    statuses: list[IoStatusAnswer] = []  # its io statuses (io.createStatus)

    @classmethod
    def of(cls, run: Run) -> RunAnswer:
        return cls(
            tasks=task_tree(run.tasks, subtasks=False),
            statuses=[IoStatusAnswer.of(s) for s in run.io_statuses],
            id=run.id,
            job_id=run.job_slug,
            version=run.version,
            number=run.number,
            status=run.status,
            is_test=run.is_test,
            output=run.output,
            event_id=run.event_id,
            created_at=iso_time(run.created_at),
            queued_at=iso_time(run.queued_at),
            started_at=iso_time(run.started_at),
            completed_at=iso_time(run.completed_at),
            updated_at=iso_time(run.updated_at),
            execution_count=run.execution_count,
            execution_duration_in_ms=run.execution_duration_ms,
        )


class RunV2(Sparse):
    """A run as trigger.dev's `client.getRun` reads it (`GET /api/v2/runs/{id}`): a page of
    its top-level tasks (`nextCursor` fetches the next) and its io statuses."""

    OMITTED = frozenset({"next_cursor"})

    id: str
    status: str
    started_at: str | None
    updated_at: str | None
    completed_at: str | None
    output: Any
    tasks: list[TaskSummary]
    statuses: list[IoStatusAnswer]
    next_cursor: str | None = None

    @classmethod
    def of(
        cls, run: Run, *, take: int = 20, cursor: str | None = None, subtasks: bool = False
    ) -> RunV2:
        tree = task_tree(run.tasks, subtasks=subtasks)
        if cursor is not None:
            start = next((i for i, t in enumerate(tree) if t.id == cursor), len(tree))
            tree = tree[start:]
        return cls(
            id=run.id,
            status=run.status,
            started_at=iso_time(run.started_at),
            updated_at=iso_time(run.updated_at),
            completed_at=iso_time(run.completed_at),
            output=run.output,
            tasks=tree[:take],
            statuses=[IoStatusAnswer.of(s) for s in run.io_statuses],
            next_cursor=tree[take].id if len(tree) > take else None,
        )


class ListedRun(Answer):
    id: str
    status: str
    started_at: str | None
    updated_at: str | None
    completed_at: str | None

    @classmethod
    def of(cls, run: RunListing) -> ListedRun:
        return cls(
            id=run.id,
            status=run.status,
            started_at=iso_time(run.started_at),
            updated_at=iso_time(run.updated_at),
            completed_at=iso_time(run.completed_at),
        )


class RunsPage(Answer):
    """A job's runs, newest first (trigger.dev's getRuns); `nextCursor` fetches the next page."""

    runs: list[ListedRun]
    next_cursor: str | None = None


class RunSummary(Answer):
    id: str
    status: str
    output: Any


class StatusChange(Answer):
    status: str
    at: str
    detail: Any


class RunStatuses(Answer):
    """A run's status history, oldest first."""

    run: RunSummary
    statuses: list[StatusChange]

    @classmethod
    def of(cls, run: Run) -> RunStatuses:
        return cls(
            run=RunSummary(id=run.id, status=run.status, output=run.output),
            statuses=[
                StatusChange(status=s.status, at=s.at.isoformat(), detail=s.detail)
                for s in run.statuses
            ],
        )


class RunStatusesV2(Answer):
    """A run's io statuses as `client.getRunStatuses` reads them."""

    run: RunSummary
    statuses: list[IoStatusAnswer]

    @classmethod
    def of(cls, run: Run) -> RunStatusesV2:
        return cls(
            run=RunSummary(id=run.id, status=run.status, output=run.output),
            statuses=[IoStatusAnswer.of(s) for s in run.io_statuses],
        )


class ServerTask(Answer):
    """A task as the SDK gets it back (trigger.dev's ServerTask)."""

    id: str
    name: str
    icon: str | None
    noop: bool
    started_at: str | None
    completed_at: str | None
    delay_until: str | None
    status: str
    description: str | None
    params: Any
    output: Any
    properties: Any
    output_properties: Any
    style: Any
    error: str | None
    parent_id: str | None
    attempts: int
    idempotency_key: str
    operation: str | None
    callback_url: str | None = None
    child_execution_mode: str

    @classmethod
    def of(cls, task: Task) -> ServerTask:
        return cls(
            id=task.id,
            name=task.name,
            icon=task.icon,
            noop=task.noop,
            started_at=iso_time(task.started_at),
            completed_at=iso_time(task.completed_at),
            delay_until=iso_time(task.delay_until),
            status=task.status,
            description=task.description,
            params=task.params,
            output=task.output,
            properties=task.properties,
            output_properties=task.output_properties,
            style=task.style,
            error=task.error,
            parent_id=task.parent_id,
            attempts=task.attempts,
            idempotency_key=task.idempotency_key,
            operation=task.operation,
            child_execution_mode="PARALLEL" if task.parallel else "SEQUENTIAL",
        )


class CachedTasksAnswer(Sparse):
    OMITTED = frozenset({"cursor"})

    tasks: list[dict[str, Any]]
    cursor: str | None = None


class TaskAnswer(Sparse):
    """`POST .../tasks` with `Trigger-Version: 2023-09-29`: the task, and the next page of
    the run's completed tasks when the SDK sent a cursor."""

    OMITTED = frozenset({"cached_tasks"})

    task: ServerTask
    cached_tasks: CachedTasksAnswer | None = None

    @classmethod
    def of(cls, task: Task, cache: TaskCache | None) -> TaskAnswer:
        cached = None
        if cache is not None:
            cached = CachedTasksAnswer(tasks=[t.wire() for t in cache.tasks], cursor=cache.cursor)
        return cls(task=ServerTask.of(task), cached_tasks=cached)


class EventAnswer(Answer):
    id: str
    name: str
    payload: Any
    context: Any
    timestamp: str
    deliver_at: str | None
    delivered_at: str | None
    cancelled_at: str | None

    @classmethod
    def of(cls, event: EventRecord) -> EventAnswer:
        return cls(
            id=event.event_id,
            name=event.name,
            payload=event.payload,
            context=event.context,
            timestamp=event.timestamp.isoformat(),
            deliver_at=iso_time(event.deliver_at),
            delivered_at=iso_time(event.delivered_at),
            cancelled_at=iso_time(event.cancelled_at),
        )


class EndpointAnswer(Answer):
    id: str
    slug: str
    url: str
    indexed_at: str | None
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, endpoint: EndpointRow) -> Self:
        return cls(
            id=endpoint.id,
            slug=endpoint.slug,
            url=endpoint.url,
            indexed_at=iso_time(endpoint.indexed_at),
            created_at=iso_time(endpoint.created_at),
            updated_at=iso_time(endpoint.updated_at),
        )


class RegisteredEndpoint(EndpointAnswer):
    """An endpoint that answered PING, its indexing queued."""

    indexing: str = "queued"


class StoredValue(Sparse):
    """A key-value store answer (trigger.dev's KeyValueStoreResponseBody); `value` is the
    stored text, absent when there is none."""

    OMITTED = frozenset({"value"})

    action: Literal["GET", "SET"]
    key: str
    value: str | None = None


class DeletedValue(Answer):
    action: Literal["DELETE"] = "DELETE"
    key: str
    deleted: bool
