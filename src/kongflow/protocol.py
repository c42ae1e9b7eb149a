"""trigger.dev v2's wire protocol between the jobs service and an endpoint, shared by both sides.

The service POSTs to the endpoint's URL with `x-trigger-action` saying what it wants:
PING (is this the endpoint I registered?), INDEX_ENDPOINT (which jobs do you define?) and
EXECUTE_JOB (run this job for this event). Field names are trigger.dev's camelCase, so an
endpoint built on trigger.dev's own v2 SDK speaks it too."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel

ACTION_HEADER = "x-trigger-action"
API_KEY_HEADER = "x-trigger-api-key"
ENDPOINT_ID_HEADER = "x-trigger-endpoint-id"
SIGNATURE_HEADER = "X-Trigger-Signature-256"

Action = Literal["PING", "INDEX_ENDPOINT", "EXECUTE_JOB"]
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


class RunJobBody(Wire):
    """What EXECUTE_JOB sends (trigger.dev's RunJobBody, without the io-task fields)."""

    def wire(self) -> dict[str, Any]:
        # Nulls are kept: trigger.dev requires `event.payload` even when it is null.
        return self.model_dump(mode="json", by_alias=True)

    event: ApiEventLog
    job: JobRef
    run: RunRef
    environment: EnvironmentRef
    organization: OrganizationRef
    project: ProjectRef | None = None


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
    task: Any = None


class RunJobInvalidPayload(Wire):
    status: Literal["INVALID_PAYLOAD"]
    errors: list[SchemaError]


class RunJobUnresolvedAuth(Wire):
    status: Literal["UNRESOLVED_AUTH_ERROR"]
    issues: dict[str, Any] = Field(default_factory=dict)


class RunJobUnsupported(Wire):
    """io-task answers (RESUME_WITH_TASK, RETRY_WITH_TASK, CANCELED, YIELD_EXECUTION, ...):
    understood, but kongflow runs jobs without io tasks."""

    status: Literal[
        "RESUME_WITH_TASK",
        "RETRY_WITH_TASK",
        "CANCELED",
        "YIELD_EXECUTION",
        "AUTO_YIELD_EXECUTION",
        "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
    ]


RunJobResponse = Annotated[
    RunJobSuccess | RunJobError | RunJobInvalidPayload | RunJobUnresolvedAuth | RunJobUnsupported,
    Field(discriminator="status"),
]
RUN_JOB_RESPONSE: TypeAdapter[RunJobResponse] = TypeAdapter(RunJobResponse)
