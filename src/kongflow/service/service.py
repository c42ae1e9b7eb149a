"""The jobs service assembled: one WorkerQueue over the trigger.dev catalog, with the handlers
of runs, executions, notifications, events and endpoints. Each part is handed the queue (for
transactions and jobs), the one `Database` (connections and SQL) and the one `Outbound` (the HTTP
client and network policy of every call to a user's URL)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from kongflow.engine.client import Client
from kongflow.engine.tasks import ExponentialBackoff, RetryPolicy
from kongflow.service.catalog import (
    QUEUE_LIMITS,
    TRIGGER_CATALOG,
    DeliverRunSubscription,
    PerformRunExecution,
    ScheduleEmail,
)
from kongflow.service.database import Database
from kongflow.service.email import SmtpSettings, email_handler
from kongflow.service.endpoints import EndpointService
from kongflow.service.environments import EnvironmentService
from kongflow.service.events import EventService
from kongflow.service.execution import RunExecution
from kongflow.service.network import NetworkPolicy
from kongflow.service.notifications import RunNotifications
from kongflow.service.operations import TaskOperations
from kongflow.service.outbound import KiB, MiB, Outbound
from kongflow.service.runs import RunService
from kongflow.service.schedules import ScheduleService
from kongflow.service.schema import ALL_COMPONENTS
from kongflow.service.statuses import StatusService
from kongflow.service.store import KeyValueStore
from kongflow.service.tasks import TaskService
from kongflow.typed import RecurringTask, TaskDefinition, WorkerQueue

FAIL_STALLED_RUNS = "jobs.failStalledRuns"
_EXECUTION_BACKOFF = ExponentialBackoff(base=2, max_exponent=8)
_WEBHOOK_BACKOFF = ExponentialBackoff(base=2, max_exponent=10)
_STRICT = NetworkPolicy.strict()


@dataclass(frozen=True)
class JobsOptions:
    """How hard kongflow tries to reach endpoints and subscribers.

    trigger.dev re-enqueued an execution itself when an endpoint was down; here that is the
    queue's retry of `performRunExecution`: `execution_attempts` tries, `execution_retry`
    apart (2, 4, 8, ... s, at most 256 s).

    A run executed `max_executions` times without finishing (an endpoint that yields or resumes
    for ever) ends TIMED_OUT.

    `network` says which addresses may be called (strict by default: public ones only; see
    NetworkPolicy). Answers are read up to `endpoint_answer_limit` bytes from endpoints and
    `webhook_answer_limit` from subscribers; a longer one fails the call.

    `smtp` is the server `scheduleEmail` jobs are delivered through; without one, no handler
    takes them and they wait for a worker that has one."""

    request_timeout: float = 300.0
    ping_timeout: float = 10.0
    execution_attempts: int = 8
    execution_retry: RetryPolicy = _EXECUTION_BACKOFF
    webhook_timeout: float = 10.0
    webhook_attempts: int = 13
    webhook_retry: RetryPolicy = _WEBHOOK_BACKOFF
    max_executions: int = 1000
    smtp: SmtpSettings | None = None
    network: NetworkPolicy = _STRICT
    endpoint_answer_limit: int = 4 * MiB
    webhook_answer_limit: int = 64 * KiB

    def __post_init__(self) -> None:
        if not isinstance(self.network, NetworkPolicy):
            raise TypeError(f"network is a NetworkPolicy, not {self.network!r}")
        for name in ("endpoint_answer_limit", "webhook_answer_limit", "max_executions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("request_timeout", "ping_timeout", "webhook_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds")


def jobs_catalog(options: JobsOptions) -> dict[str, TaskDefinition[Any]]:
    """The trigger.dev catalog with the retry policy of executions and webhooks set."""
    catalog = dict(TRIGGER_CATALOG)
    catalog[PerformRunExecution.task] = replace(
        catalog[PerformRunExecution.task],
        max_attempts=options.execution_attempts,
        retry=options.execution_retry,
        timeout=options.request_timeout + 60,
    )
    catalog[DeliverRunSubscription.task] = replace(
        catalog[DeliverRunSubscription.task],
        max_attempts=options.webhook_attempts,
        retry=options.webhook_retry,
        timeout=options.webhook_timeout + 30,
    )
    return catalog


class JobsService:
    """`async with JobsService(database_url) as jobs:` enqueue-side use (the API); call
    `await jobs.start()` to also run the handlers in this process (a worker)."""

    def __init__(
        self,
        database: str | None = None,
        *,
        schema: str | None = None,
        client: Client | None = None,
        options: JobsOptions | None = None,
        **worker_options: Any,
    ) -> None:
        self.options = options or JobsOptions()
        self.client = client or Client(
            database,
            schema=schema,
            components=ALL_COMPONENTS,
            # poll-only: behind a transaction-mode pooler, where prepared statements break
            prepared_statements=not worker_options.get("poll_only", False),
        )
        self._owns_client = client is None
        options = self.options
        self.outbound = Outbound(options.network, timeout=options.ping_timeout)
        worker_options.setdefault("queue_limits", QUEUE_LIMITS)
        self.queue = queue = WorkerQueue(
            jobs_catalog(options), client=self.client, **worker_options
        )
        self.database = db = Database(self.client)
        self.environments = EnvironmentService(self.client)
        self.runs = RunService(queue, db, self.outbound)
        self.tasks = TaskService(queue, db)
        self.operations = TaskOperations(
            queue, db, self.tasks, self.outbound, answer_limit=options.endpoint_answer_limit
        )
        self.statuses = StatusService(db)
        self.store = KeyValueStore(db)
        self.execution = RunExecution(
            queue,
            db,
            self.runs,
            self.tasks,
            self.outbound,
            options.request_timeout,
            answer_limit=options.endpoint_answer_limit,
            max_executions=options.max_executions,
        )
        self.notifications = RunNotifications(
            queue,
            db,
            self.outbound,
            options.webhook_timeout,
            answer_limit=options.webhook_answer_limit,
        )
        self.events = EventService(queue, db, self.runs)
        self.schedules = ScheduleService(queue, db, self.runs)
        self.endpoints = EndpointService(
            queue,
            db,
            self.outbound,
            self.schedules,
            answer_limit=options.endpoint_answer_limit,
            timeout=options.ping_timeout,
        )
        parts = (
            self.runs,
            self.tasks,
            self.operations,
            self.execution,
            self.notifications,
            self.events,
            self.endpoints,
            self.schedules,
        )
        for part in parts:
            self.queue.handlers.update(part.handlers())
        if options.smtp is not None:  # else scheduleEmail jobs wait for a worker that has it
            self.queue.handlers[ScheduleEmail.task] = email_handler(options.smtp)
        self.queue.recurring[FAIL_STALLED_RUNS] = RecurringTask(
            "* * * * *", self.execution.fail_stalled_runs
        )

    async def open(self) -> JobsService:
        if self._owns_client and not self.client.is_open:
            await self.client.open()
        return self

    async def start(self) -> None:
        """Run the jobs service's handlers in this process."""
        await self.open()
        await self.queue.start()

    async def close(self, timeout: float = 30.0) -> None:
        if self.queue.worker is not None:
            await self.queue.stop(timeout)
        await self.outbound.aclose()
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> JobsService:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
