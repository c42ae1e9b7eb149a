"""trigger.dev v2's worker catalog (its workerCatalog of July 2023, with the later resumeRun and
run-subscription tasks): every task with its payload model, queue, priority and attempts as
trigger.dev set them, graphile-worker's defaults (priority 0, 25 attempts) where it set none.

Each task has its own payload model, which names the task (`StartRun.task == "startRun"`), so
the service enqueues `StartRun(id=...)` and a renamed field or task fails type checking. Handlers
are registered by the services that own each domain (the jobs service, the email sender); a task
without one is refused at enqueue.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kongflow.typed import TaskDefinition, TaskPayload

INTERNAL_QUEUE = "internal-queue"
EXECUTIONS_QUEUE = "executions"
EVENT_DISPATCHER_QUEUE = "event-dispatcher"

#: Global limits of the catalog's queues; the dynamic per-run/task/queue ones are serial.
QUEUE_LIMITS: dict[str, int] = {
    EXECUTIONS_QUEUE: 10,
    INTERNAL_QUEUE: 3,
    EVENT_DISPATCHER_QUEUE: 8,
    "runs:*": 1,
    "tasks:*": 1,
    "queue:*": 1,
}


class Payload(BaseModel):
    """Payloads travel in trigger.dev's camelCase; Python code uses snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Task(Payload, TaskPayload):
    """A catalog task's payload; each subclass names its task."""


class IdPayload(Task):
    """The payload of the many tasks that only carry an id."""

    id: str


class OrganizationCreated(IdPayload):
    task: ClassVar[str] = "organizationCreated"


class IndexEndpoint(Task):
    task: ClassVar[str] = "indexEndpoint"
    id: str
    source: Literal["MANUAL", "API", "INTERNAL", "HOOK"] | None = None
    source_data: Any = None
    reason: str | None = None


class ScheduleEmail(Task):
    task: ClassVar[str] = "scheduleEmail"
    to: str
    subject: str
    text: str | None = None
    html: str | None = None


class GithubPush(Task):
    task: ClassVar[str] = "githubPush"
    branch: str
    commit_sha: str
    repository: str


class GithubAppInstallationDeleted(IdPayload):
    task: ClassVar[str] = "githubAppInstallationDeleted"


class StopVM(IdPayload):
    task: ClassVar[str] = "stopVM"


class StartInitialProjectDeployment(IdPayload):
    task: ClassVar[str] = "startInitialProjectDeployment"


class StartRun(IdPayload):
    task: ClassVar[str] = "startRun"


class PerformRunExecution(IdPayload):
    task: ClassVar[str] = "performRunExecution"


class PerformTaskOperation(IdPayload):
    task: ClassVar[str] = "performTaskOperation"


class RunFinished(IdPayload):
    task: ClassVar[str] = "runFinished"


class DeliverHttpSourceRequest(IdPayload):
    task: ClassVar[str] = "deliverHttpSourceRequest"


class RefreshOAuthToken(Task):
    task: ClassVar[str] = "refreshOAuthToken"
    organization_id: str
    connection_id: str


class RegisterJob(Task):
    task: ClassVar[str] = "registerJob"
    endpoint_id: str
    job: dict[str, Any]


class RegisterSource(Task):
    task: ClassVar[str] = "registerSource"
    endpoint_id: str
    source: dict[str, Any]


class RegisterDynamicTrigger(Task):
    task: ClassVar[str] = "registerDynamicTrigger"
    endpoint_id: str
    dynamic_trigger: dict[str, Any]


class RegisterDynamicSchedule(Task):
    task: ClassVar[str] = "registerDynamicSchedule"
    endpoint_id: str
    dynamic_schedule: dict[str, Any]


class ActivateSource(Task):
    task: ClassVar[str] = "activateSource"
    id: str
    orphaned_events: list[str] | None = None


class StartQueuedRuns(IdPayload):
    task: ClassVar[str] = "startQueuedRuns"


class DeliverEvent(IdPayload):
    task: ClassVar[str] = "deliverEvent"


class InvokeDispatcher(Task):
    task: ClassVar[str] = "events.invokeDispatcher"
    id: str
    event_record_id: str


class ScheduledPayload(Payload):
    ts: datetime
    last_timestamp: datetime | None = None


class DeliverScheduled(Task):
    task: ClassVar[str] = "events.deliverScheduled"
    id: str
    payload: ScheduledPayload


class MissingConnectionCreated(IdPayload):
    task: ClassVar[str] = "missingConnectionCreated"


class ConnectionCreated(IdPayload):
    task: ClassVar[str] = "connectionCreated"


class ResumeRun(IdPayload):
    task: ClassVar[str] = "resumeRun"


class ResumeTask(IdPayload):
    """A waiting task's time has come (io.wait, a retry): start it and resume its run."""

    task: ClassVar[str] = "resumeTask"


class DeliverRunSubscriptions(IdPayload):
    task: ClassVar[str] = "deliverRunSubscriptions"


class DeliverRunSubscription(IdPayload):
    task: ClassVar[str] = "deliverRunSubscription"


def run_queue(payload: IdPayload) -> str:
    """runs:<id>"""
    return f"runs:{payload.id}"


def task_queue(payload: IdPayload) -> str:
    """tasks:<id>"""
    return f"tasks:{payload.id}"


def queued_runs_queue(payload: IdPayload) -> str:
    """queue:<id>"""
    return f"queue:{payload.id}"


def _define(
    payload: type[Task],
    *,
    queue_name: str | Callable[[Any], str] | None = None,
    priority: int,
    attempts: int,
    timeout: float,
) -> tuple[str, TaskDefinition[Any]]:
    definition = TaskDefinition(
        payload, queue_name=queue_name, priority=priority, max_attempts=attempts, timeout=timeout
    )
    return payload.task, definition


def _internal(
    payload: type[Task], priority: int, attempts: int, timeout: float
) -> tuple[str, TaskDefinition[Any]]:
    return _define(
        payload, queue_name=INTERNAL_QUEUE, priority=priority, attempts=attempts, timeout=timeout
    )


TRIGGER_CATALOG: dict[str, TaskDefinition[Any]] = dict(
    [
        _internal(OrganizationCreated, 50, 3, 60),
        _internal(IndexEndpoint, 0, 25, 300),
        _internal(ScheduleEmail, 100, 3, 30),
        _internal(GithubPush, 50, 3, 120),
        _internal(GithubAppInstallationDeleted, 50, 3, 60),
        _internal(StopVM, 50, 3, 120),
        _internal(StartInitialProjectDeployment, 50, 3, 600),
        _define(StartRun, queue_name=EXECUTIONS_QUEUE, priority=0, attempts=13, timeout=600),
        _define(PerformRunExecution, queue_name=run_queue, priority=0, attempts=1, timeout=1800),
        _define(PerformTaskOperation, queue_name=task_queue, priority=0, attempts=3, timeout=300),
        _define(RunFinished, priority=0, attempts=3, timeout=60),
        _define(DeliverHttpSourceRequest, priority=0, attempts=5, timeout=30),
        _internal(RefreshOAuthToken, 0, 25, 60),
        _define(RegisterJob, priority=0, attempts=3, timeout=60),
        _define(RegisterSource, priority=0, attempts=3, timeout=60),
        _define(RegisterDynamicTrigger, priority=0, attempts=3, timeout=60),
        _define(RegisterDynamicSchedule, priority=0, attempts=3, timeout=60),
        _define(ActivateSource, priority=0, attempts=3, timeout=120),
        _define(StartQueuedRuns, queue_name=queued_runs_queue, priority=0, attempts=3, timeout=300),
        _define(
            DeliverEvent, queue_name=EVENT_DISPATCHER_QUEUE, priority=0, attempts=25, timeout=120
        ),
        _define(InvokeDispatcher, priority=0, attempts=3, timeout=30),
        _define(DeliverScheduled, priority=0, attempts=5, timeout=60),
        _define(MissingConnectionCreated, priority=0, attempts=3, timeout=30),
        _define(ConnectionCreated, priority=0, attempts=3, timeout=30),
        _define(ResumeRun, priority=0, attempts=10, timeout=60),
        _define(ResumeTask, priority=0, attempts=10, timeout=60),
        _define(DeliverRunSubscriptions, priority=0, attempts=5, timeout=60),
        _define(DeliverRunSubscription, priority=0, attempts=13, timeout=30),
    ]
)
