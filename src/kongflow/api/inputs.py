"""What API requests may carry: bounded field types and the request bodies (camelCase on the
wire, as trigger.dev's SDK sends them). A value out of bounds is a 400 naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    AliasChoices,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    model_validator,
)
from pydantic.alias_generators import to_camel

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_ID_LENGTH = 256  # event ids, idempotency keys, names, sources, path ids
MAX_URL_LENGTH = 2048


def _http_url(value: str) -> str:
    """An http(s) URL, kept exactly as given (pydantic's URL type would rewrite it)."""
    _URL.validate_python(value)
    return value


_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
HttpUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH), AfterValidator(_http_url)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
PathId = Annotated[str, Path(max_length=MAX_ID_LENGTH)]


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TestJobBody(Body):
    payload: dict[str, Any] = Field(default_factory=dict)


class InvokeOptions(Body):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    callback_url: HttpUrl | None = None


class InvokeBody(Body):
    payload: Any = Field(default_factory=dict)
    context: Any = None
    options: InvokeOptions = Field(default_factory=InvokeOptions)


class EventBody(Body):
    name: Identifier
    payload: Any = None
    context: Any = None
    id: Identifier | None = None
    source: Identifier = "trigger.dev"
    timestamp: datetime | None = None


def _epoch_ms(value: Any) -> Any:
    """Milliseconds since the epoch become a date; an ISO-8601 string goes on to be parsed."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("milliseconds since the epoch out of range") from None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return value
    raise ValueError("must be an ISO-8601 date string or whole milliseconds since the epoch")


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("an ISO-8601 date must include its time zone (e.g. 'Z' or '+02:00')")
    return when


def _within_a_year(when: datetime) -> datetime:
    _aware(when)
    now, year = datetime.now(UTC), timedelta(seconds=MAX_DELAY_SECONDS)
    if not now - year <= when <= now + year:
        raise ValueError("must be within 366 days of now")
    return when


DeliverAt = Annotated[
    datetime,
    BeforeValidator(_epoch_ms),
    AfterValidator(_within_a_year),
    Field(description="when to deliver: an ISO-8601 date, or milliseconds since the epoch"),
]


class SendEventOptions(Body):
    deliver_at: DeliverAt | None = None
    deliver_after: StrictInt | StrictFloat | None = Field(
        default=None, ge=0, le=MAX_DELAY_SECONDS, description="seconds from now (a number)"
    )

    @model_validator(mode="after")
    def _one_delay(self) -> SendEventOptions:
        if self.deliver_at is not None and self.deliver_after is not None:
            raise ValueError("give deliverAt or deliverAfter, not both")
        return self


class SendEventBody(Body):
    event: EventBody
    options: SendEventOptions = Field(default_factory=SendEventOptions)


class SendEventsBody(Body):
    """Several events, stored together (trigger.dev's sendEvents)."""

    events: list[EventBody] = Field(min_length=1, max_length=100)
    options: SendEventOptions = Field(default_factory=SendEventOptions)


class Lenient(BaseModel):
    """A body as trigger.dev's SDK sends it: fields kongflow does not use are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class TaskCallback(Lenient):
    enabled: bool = False


AwareTime = Annotated[datetime, AfterValidator(_aware)]
Name = Annotated[str, Field(max_length=MAX_ID_LENGTH)]


class RunTaskBody(Lenient):
    """An io task (trigger.dev's RunTaskBody): created by its idempotency key."""

    idempotency_key: Identifier
    name: Name = "Task"
    display_key: Name | None = None
    icon: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)
    noop: bool = False
    params: Any = None
    properties: list[JsonValue] | None = Field(default=None, max_length=100)
    style: dict[str, Any] | None = None
    delay_until: AwareTime | None = None
    operation: Name | None = None
    parent_id: Identifier | None = None
    parallel: bool = False
    callback: TaskCallback | None = None


class CompleteTaskBody(Lenient):
    """A task's completion: `output` is a JSON string with `Trigger-Version: 2023-11-01`,
    the JSON value itself without it."""

    output: Any = None
    properties: list[JsonValue] | None = Field(default=None, max_length=100)


class TaskFailure(Lenient):
    message: str
    name: str | None = None
    stack: str | None = None


class FailTaskBody(Lenient):
    error: TaskFailure


class StatusUpdateBody(Lenient):
    """io.createStatus / status.update: each given field replaces the stored one."""

    label: Name | None = None
    state: Literal["loading", "success", "failure"] | None = None
    data: dict[str, Any] | None = None


class CreateEndpointBody(Body):
    """An endpoint to register: its id is `slug`, or `id` as trigger.dev's CLI sends it, or
    `name` as its SDK's `registerEndpoint` does."""

    slug: str = Field(
        max_length=63,
        validation_alias=AliasChoices("slug", "id", "name"),
        description="the endpoint's id (trigger.dev's client id); also accepted as `id` or `name`",
    )
    url: HttpUrl
