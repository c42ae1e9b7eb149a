"""trigger.dev v2's worker catalog (its workerCatalog of July 2023, with the later resumeRun and
run-subscription tasks): every task with its payload model, queue, priority and attempts as
trigger.dev set them, graphile-worker's defaults (priority 0, 25 attempts) where it set none.

Handlers are registered by the services that own each domain (the jobs service, the email
sender); a task without one is refused at enqueue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kongflow.workerqueue.task import TaskDefinition

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


class IdPayload(Payload):
    id: str


class IndexEndpointPayload(Payload):
    id: str
    source: Literal["MANUAL", "API", "INTERNAL", "HOOK"] | None = None
    source_data: Any = None
    reason: str | None = None


class ScheduleEmailPayload(Payload):
    to: str
    subject: str
    text: str | None = None
    html: str | None = None


class GithubPushPayload(Payload):
    branch: str
    commit_sha: str
    repository: str


class RefreshOAuthTokenPayload(Payload):
    organization_id: str
    connection_id: str


class RegisterJobPayload(Payload):
    endpoint_id: str
    job: dict[str, Any]


class RegisterSourcePayload(Payload):
    endpoint_id: str
    source: dict[str, Any]


class RegisterDynamicTriggerPayload(Payload):
    endpoint_id: str
    dynamic_trigger: dict[str, Any]


class RegisterDynamicSchedulePayload(Payload):
    endpoint_id: str
    dynamic_schedule: dict[str, Any]


class ActivateSourcePayload(Payload):
    id: str
    orphaned_events: list[str] | None = None


class InvokeDispatcherPayload(Payload):
    id: str
    event_record_id: str


class ScheduledPayload(Payload):
    ts: datetime
    last_timestamp: datetime | None = None


class DeliverScheduledPayload(Payload):
    id: str
    payload: ScheduledPayload


def run_queue(payload: IdPayload) -> str:
    """runs:<id>"""
    return f"runs:{payload.id}"


def task_queue(payload: IdPayload) -> str:
    """tasks:<id>"""
    return f"tasks:{payload.id}"


def queued_runs_queue(payload: IdPayload) -> str:
    """queue:<id>"""
    return f"queue:{payload.id}"


def _internal(payload: type[Payload], priority: int, attempts: int, timeout: float) -> Any:
    return TaskDefinition(
        payload,
        queue_name=INTERNAL_QUEUE,
        priority=priority,
        max_attempts=attempts,
        timeout=timeout,
    )


TRIGGER_CATALOG: dict[str, TaskDefinition[Any]] = {
    "organizationCreated": _internal(IdPayload, 50, 3, 60),
    "indexEndpoint": _internal(IndexEndpointPayload, 0, 25, 300),
    "scheduleEmail": _internal(ScheduleEmailPayload, 100, 3, 30),
    "githubPush": _internal(GithubPushPayload, 50, 3, 120),
    "githubAppInstallationDeleted": _internal(IdPayload, 50, 3, 60),
    "stopVM": _internal(IdPayload, 50, 3, 120),
    "startInitialProjectDeployment": _internal(IdPayload, 50, 3, 600),
    "startRun": TaskDefinition(
        IdPayload, queue_name=EXECUTIONS_QUEUE, priority=0, max_attempts=13, timeout=600
    ),
    "performRunExecution": TaskDefinition(
        IdPayload, queue_name=run_queue, priority=0, max_attempts=1, timeout=1800
    ),
    "performTaskOperation": TaskDefinition(
        IdPayload, queue_name=task_queue, priority=0, max_attempts=3, timeout=300
    ),
    "runFinished": TaskDefinition(IdPayload, priority=0, max_attempts=3, timeout=60),
    "deliverHttpSourceRequest": TaskDefinition(IdPayload, priority=0, max_attempts=5, timeout=30),
    "refreshOAuthToken": _internal(RefreshOAuthTokenPayload, 0, 25, 60),
    "registerJob": TaskDefinition(RegisterJobPayload, priority=0, max_attempts=3, timeout=60),
    "registerSource": TaskDefinition(RegisterSourcePayload, priority=0, max_attempts=3, timeout=60),
    "registerDynamicTrigger": TaskDefinition(
        RegisterDynamicTriggerPayload, priority=0, max_attempts=3, timeout=60
    ),
    "registerDynamicSchedule": TaskDefinition(
        RegisterDynamicSchedulePayload, priority=0, max_attempts=3, timeout=60
    ),
    "activateSource": TaskDefinition(
        ActivateSourcePayload, priority=0, max_attempts=3, timeout=120
    ),
    "startQueuedRuns": TaskDefinition(
        IdPayload, queue_name=queued_runs_queue, priority=0, max_attempts=3, timeout=300
    ),
    "deliverEvent": TaskDefinition(
        IdPayload, queue_name=EVENT_DISPATCHER_QUEUE, priority=0, max_attempts=25, timeout=120
    ),
    "events.invokeDispatcher": TaskDefinition(
        InvokeDispatcherPayload, priority=0, max_attempts=3, timeout=30
    ),
    "events.deliverScheduled": TaskDefinition(
        DeliverScheduledPayload, priority=0, max_attempts=5, timeout=60
    ),
    "missingConnectionCreated": TaskDefinition(IdPayload, priority=0, max_attempts=3, timeout=30),
    "connectionCreated": TaskDefinition(IdPayload, priority=0, max_attempts=3, timeout=30),
    "resumeRun": TaskDefinition(IdPayload, priority=0, max_attempts=10, timeout=60),
    "deliverRunSubscriptions": TaskDefinition(IdPayload, priority=0, max_attempts=5, timeout=60),
    "deliverRunSubscription": TaskDefinition(IdPayload, priority=0, max_attempts=13, timeout=30),
}
