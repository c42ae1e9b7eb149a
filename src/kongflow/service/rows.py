"""The jobs service's rows, as the SQL in `jobs.sql` selects them (read with psycopg's
`class_row`, so a column and its field cannot drift apart unnoticed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import JsonValue

from kongflow.service.environments import EnvironmentType

#: A jsonb value as psycopg loads it.
Json = JsonValue


@dataclass(frozen=True)
class RunStatus:
    """One entry of a run's status history."""

    status: str
    detail: Json
    at: datetime


@dataclass(frozen=True)
class _RunColumns:
    id: str
    job_slug: str
    version: str
    number: int | None
    status: str
    is_test: bool
    output: Json
    event_id: str
    idempotency_key: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    execution_count: int
    execution_duration_ms: int


@dataclass(frozen=True)
class Run(_RunColumns):
    """A run as API clients read it, with its status history (oldest first), its io tasks (in
    creation order) and its io statuses."""

    statuses: tuple[RunStatus, ...] = ()
    tasks: tuple[TaskLine, ...] = ()
    io_statuses: tuple[IoStatus, ...] = ()


@dataclass(frozen=True)
class RunContext(_RunColumns):
    """The execution's view of a run: everything an EXECUTE_JOB request or a run notification
    needs, in one row."""

    environment_id: str
    event_record_id: str
    event_name: str
    event_payload: Json
    event_context: Json
    event_timestamp: datetime
    event_deliver_at: datetime
    event_delivered_at: datetime | None
    endpoint_url: str
    endpoint_slug: str
    environment_slug: str
    environment_type: EnvironmentType
    api_key: str
    project_id: str
    project_slug: str
    project_name: str
    organization_id: str
    organization_slug: str
    organization_title: str
    yielded_executions: list[str]


@dataclass(frozen=True)
class RunState:
    """What starting a run looks at (the run locked)."""

    id: str
    job_id: str
    status: str


@dataclass(frozen=True)
class RunListing:
    """A run in a job's list of runs (trigger.dev's getRuns)."""

    id: str
    status: str
    started_at: datetime | None
    updated_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class IdempotentRun:
    """The run an idempotency key created."""

    id: str
    event_id: str
    status: str
    job_slug: str


@dataclass(frozen=True)
class StalledRun:
    id: str
    last_error: str


@dataclass(frozen=True)
class Endpoint:
    id: str
    environment_id: str
    slug: str
    url: str
    indexed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class JobVersion:
    """A job's version in an environment, with the event it listens to (its first name)."""

    job_id: str
    job_slug: str
    version_id: str
    version: str
    endpoint_id: str
    environment_id: str
    event_name: str
    event_source: str
    event_filter: dict[str, Json] | None


@dataclass(frozen=True)
class EventRecord:
    id: str
    environment_id: str
    event_id: str
    name: str
    source: str
    payload: Json
    context: Json
    is_test: bool
    timestamp: datetime
    deliver_at: datetime
    delivered_at: datetime | None
    created_at: datetime
    cancelled_at: datetime | None


@dataclass(frozen=True)
class Subscription:
    id: str
    run_id: str
    url: str
    event: str
    recipient_method: str
    delivered_at: datetime | None


@dataclass(frozen=True)
class Task:
    """An io task of a run (trigger.dev's Task, with its attempts counted in place)."""

    id: str
    run_id: str
    idempotency_key: str
    display_key: str | None
    name: str
    icon: str | None
    description: str | None
    status: str
    noop: bool
    params: Json
    output: Json
    error: str | None
    properties: Json
    output_properties: Json
    style: Json
    operation: str | None
    parent_id: str | None
    parallel: bool
    attempts: int
    retry_at: datetime | None
    delay_until: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class TaskLine:
    """A task as a run read lists it: no params or output."""

    id: str
    parent_id: str | None
    display_key: str | None
    status: str
    name: str
    icon: str | None
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class IoStatus:
    """A run's io status (io.createStatus), with the history of its updates."""

    key: str
    label: str
    state: str | None
    data: Json
    history: Json


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


@dataclass(frozen=True)
class Schedule:
    """A scheduled job version's schedule: every `expression` seconds, or a cron line."""

    id: str
    kind: str
    expression: str
    active: bool
    last_tick: datetime | None
    version_id: str
