"""What the API answers on success, as models: the OpenAPI schema documents them, and each is
built from the service's typed rows in one place. camelCase on the wire (trigger.dev's form);
times are ISO 8601 as `datetime.isoformat()` writes them, or null."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kongflow.protocol import iso_time
from kongflow.service.rows import Endpoint as EndpointRow
from kongflow.service.rows import EventRecord, Run, RunListing
from kongflow.service.runs import QueuedRun as QueuedRunRow


class Answer(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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
    tasks: list[Any] = []  # the run's io tasks, as trigger.dev's SDK reads a run
    statuses: list[Any] = []  # its io statuses (io.createStatus)

    @classmethod
    def of(cls, run: Run) -> RunAnswer:
        return cls(
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


class RunV2(Answer):
    """A run as trigger.dev's `client.getRun` reads it (`GET /api/v2/runs/{id}`)."""

    id: str
    status: str
    started_at: str | None
    updated_at: str | None
    completed_at: str | None
    output: Any
    tasks: list[Any] = []
    statuses: list[Any] = []

    @classmethod
    def of(cls, run: Run) -> RunV2:
        return cls(
            id=run.id,
            status=run.status,
            started_at=iso_time(run.started_at),
            updated_at=iso_time(run.updated_at),
            completed_at=iso_time(run.completed_at),
            output=run.output,
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
    statuses: list[Any] = []

    @classmethod
    def of(cls, run: Run) -> RunStatusesV2:
        return cls(run=RunSummary(id=run.id, status=run.status, output=run.output))


class CompletedTask(Answer):
    """A no-op io task, completed at once."""

    id: str
    name: str
    noop: bool
    status: str
    idempotency_key: str
    attempts: int
    output: Any


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
