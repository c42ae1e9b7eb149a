"""trigger.dev v2's wire protocol between the jobs service and an endpoint, shared by both sides.

The service POSTs to the endpoint's URL with `x-trigger-action` saying what it wants:
PING (is this the endpoint I registered?), INDEX_ENDPOINT (which jobs do you define?) and
EXECUTE_JOB (run this job for this event). Field names are trigger.dev's camelCase, so an
endpoint built on trigger.dev's own v2 SDK speaks it too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeGuard

from croniter import croniter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

ACTION_HEADER = "x-trigger-action"
API_KEY_HEADER = "x-trigger-api-key"
ENDPOINT_ID_HEADER = "x-trigger-endpoint-id"
SIGNATURE_HEADER = "X-Trigger-Signature-256"
VERSION_HEADER = "x-trigger-version"
RUN_METADATA_HEADER = "x-trigger-run-metadata"
CACHED_TASKS_CURSOR_HEADER = "x-cached-tasks-cursor"

#: trigger.dev's API versions: the server's own (sent on EXECUTE_JOB; an SDK that sees it
#: enables io.yield and lazy loading of cached tasks) and the one that sends task output as a
#: JSON string to `.../tasks/{id}/complete`.
LAZY_LOADED_CACHED_TASKS = "2023-09-29"
SERIALIZED_TASK_OUTPUT = "2023-11-01"

Action = Literal["PING", "INDEX_ENDPOINT", "EXECUTE_JOB", "RUN_NOTIFICATION"]
EnvironmentType = Literal["DEVELOPMENT", "STAGING", "PRODUCTION"]


def iso_time(value: datetime | None) -> str | None:
    """A timestamp as the wire carries it: ISO 8601, or null."""
    return value.isoformat() if value is not None else None


class Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are tolerated (newer peers)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- PING ---------------------------------------------------------------------------------------


class PingResponse(Wire):
    ok: bool
    error: str | None = None


# -- INDEX_ENDPOINT -----------------------------------------------------------------------------


class EventSpecification(Wire):
    """Which events start a job: by name and source, optionally narrowed by a payload filter
    (trigger.dev's EventFilter: each leaf is a list of accepted values)."""

    name: str | list[str]
    title: str | None = None
    source: str = "trigger.dev"
    icon: str | None = None
    filter: dict[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        return [self.name] if isinstance(self.name, str) else list(self.name)


class JobMetadata(Wire):
    """A job as an endpoint describes it (trigger.dev's JobMetadata)."""

    id: str = Field(min_length=1)
    name: str
    version: str = Field(min_length=1)
    event: EventSpecification
    trigger: dict[str, Any] | None = None
    integrations: dict[str, Any] = Field(default_factory=dict)
    internal: bool = False
    enabled: bool = True
    start_position: Literal["initial", "latest"] = "latest"
    preprocess_runs: bool = False

    @property
    def payload_filter(self) -> dict[str, Any] | None:
        """The filter an event's payload must match. trigger.dev dispatches on the static
        trigger's `rule.payload`, which its Node SDK fills (leaving `event.filter` out); an
        empty rule matches everything, and then `event.filter` is the one that counts."""
        trigger = self.trigger or {}
        rule = trigger.get("rule") if trigger.get("type") == "static" else None
        payload = rule.get("payload") if isinstance(rule, dict) else None
        if isinstance(payload, dict) and payload:
            return payload
        return self.event.filter


#: The schedules a scheduled trigger may have (trigger.dev's intervalTrigger and cronTrigger):
#: a whole number of seconds up to 30 days, or a 5-field cron line (UTC).
MAX_INTERVAL_SECONDS = 2_592_000


def is_interval(seconds: object) -> TypeGuard[int]:
    return (
        isinstance(seconds, int)
        and not isinstance(seconds, bool)
        and 1 <= seconds <= MAX_INTERVAL_SECONDS
    )


def is_cron_line(line: object) -> TypeGuard[str]:
    return isinstance(line, str) and len(line.split()) == 5 and bool(croniter.is_valid(line))


class IndexEndpointResponse(Wire):
    jobs: list[JobMetadata]
    sources: list[Any] = Field(default_factory=list)
    dynamic_triggers: list[Any] = Field(default_factory=list)
    dynamic_schedules: list[Any] = Field(default_factory=list)


# -- EXECUTE_JOB --------------------------------------------------------------------------------


class ApiEventLog(Wire):
    id: str
    name: str
    payload: Any = None
    context: Any = None
    timestamp: datetime
    deliver_at: datetime | None = None
    delivered_at: datetime | None = None


class JobRef(Wire):
    id: str
    version: str


class RunRef(Wire):
    id: str
    is_test: bool
    is_retry: bool = False
    started_at: datetime


class EnvironmentRef(Wire):
    id: str
    slug: str
    type: EnvironmentType


class OrganizationRef(Wire):
    id: str
    title: str
    slug: str


class ProjectRef(Wire):
    id: str
    name: str
    slug: str


class CachedTask(Wire):
    """A completed task sent back with an execution, so the endpoint skips it (its `id` is the
    idempotency key, as trigger.dev sends it)."""

    id: str
    idempotency_key: str
    status: str
    noop: bool = False
    output: Any = None
    parent_id: str | None = None


class AutoYieldConfig(Wire):
    """How close to `runChunkExecutionLimit` (ms left) the SDK yields at each point of a task."""

    start_task_threshold: int
    before_execute_task_threshold: int
    before_complete_task_threshold: int
    after_complete_task_threshold: int


class RunJobBody(Wire):
    """What EXECUTE_JOB sends (trigger.dev's RunJobBody)."""

    def wire(self) -> dict[str, Any]:
        # The event keeps its nulls (trigger.dev requires `event.payload` even when null);
        # the optional parts are left out when absent, since null is not "absent" to zod.
        body = self.model_dump(mode="json", by_alias=True)
        return {key: value for key, value in body.items() if value is not None}

    event: ApiEventLog
    job: JobRef
    run: RunRef
    environment: EnvironmentRef
    organization: OrganizationRef
    project: ProjectRef | None = None
    tasks: list[CachedTask] | None = None
    cached_task_cursor: str | None = None
    noop_tasks_set: str | None = None
    yielded_executions: list[str] | None = None
    run_chunk_execution_limit: int | None = None
    auto_yield_config: AutoYieldConfig | None = None


class DisplayProperty(Wire):
    label: str
    text: str
    url: str | None = None


class TaskState(Wire):
    """A task as the endpoint reports it in an execution answer (trigger.dev's TaskSchema);
    only the fields the run engine acts on are read."""

    id: str
    name: str = "Task"
    status: str
    noop: bool = False
    delay_until: AwareDatetime | None = None
    operation: str | None = None
    callback_url: str | None = None
    output_properties: list[DisplayProperty] | None = None


class ErrorWithStack(Wire):
    message: str
    name: str | None = None
    stack: str | None = None


class SchemaError(Wire):
    """A payload error: trigger.dev's Node SDK sends `path` as the list of keys down to the
    field (zod's issue path); kongflow's Python SDK sends it joined with dots."""

    path: str | list[str | int]
    message: str


class RunJobSuccess(Wire):
    status: Literal["SUCCESS"]
    output: Any = None


class RunJobError(Wire):
    status: Literal["ERROR"]
    error: ErrorWithStack
    task: TaskState | None = None


class RunJobInvalidPayload(Wire):
    status: Literal["INVALID_PAYLOAD"]
    errors: list[SchemaError]


class RunJobUnresolvedAuth(Wire):
    status: Literal["UNRESOLVED_AUTH_ERROR"]
    issues: dict[str, Any] = Field(default_factory=dict)


class RunJobResumeWithTask(Wire):
    status: Literal["RESUME_WITH_TASK"]
    task: TaskState


class RunJobRetryWithTask(Wire):
    status: Literal["RETRY_WITH_TASK"]
    task: TaskState
    error: ErrorWithStack
    retry_at: AwareDatetime


class RunJobCanceled(Wire):
    status: Literal["CANCELED"]
    task: TaskState


class RunJobYield(Wire):
    status: Literal["YIELD_EXECUTION"]
    key: str


class AutoYieldMetadata(Wire):
    location: str
    time_remaining: float
    time_elapsed: float
    limit: float | None = None


class RunJobAutoYield(AutoYieldMetadata):
    status: Literal["AUTO_YIELD_EXECUTION"]


class RunJobAutoYieldWithCompletedTask(Wire):
    """The SDK ran out of time just after a task's body: the server completes the task with
    `output` (a JSON string) and re-executes."""

    status: Literal["AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK"]
    id: str
    properties: list[DisplayProperty] | None = None
    output: str | None = None
    data: AutoYieldMetadata


class RunJobAutoYieldRateLimit(Wire):
    """The server answered 429: re-execute at `reset` (epoch milliseconds)."""

    status: Literal["AUTO_YIELD_RATE_LIMIT"]
    reset: float


#: The answers that end an execution early for io (a task to wait on, a retry, a cancelled run,
#: a yield), and those that end the run as a failure.
RunJobFlow = (
    RunJobResumeWithTask
    | RunJobRetryWithTask
    | RunJobCanceled
    | RunJobYield
    | RunJobAutoYield
    | RunJobAutoYieldWithCompletedTask
    | RunJobAutoYieldRateLimit
)
RunJobFailure = RunJobError | RunJobInvalidPayload | RunJobUnresolvedAuth

#: What each child of io.parallel reports.
ChildOutcome = Annotated[RunJobFailure | RunJobFlow, Field(discriminator="status")]


class RunJobResumeWithParallelTask(Wire):
    """io.parallel: the parent task waits, each child's own outcome is in `childErrors`."""

    status: Literal["RESUME_WITH_PARALLEL_TASK"]
    task: TaskState
    child_errors: list[ChildOutcome] = Field(default_factory=list)


RunJobResponse = Annotated[
    RunJobSuccess | RunJobFailure | RunJobFlow | RunJobResumeWithParallelTask,
    Field(discriminator="status"),
]
RUN_JOB_RESPONSE: TypeAdapter[RunJobResponse] = TypeAdapter(RunJobResponse)
