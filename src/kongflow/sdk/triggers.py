"""Triggers: what starts a job's runs, as INDEX_ENDPOINT describes them (trigger.dev's
eventTrigger, intervalTrigger, cronTrigger and invokeTrigger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from kongflow.protocol import MAX_INTERVAL_SECONDS, EventSpecification, is_cron_line, is_interval


class Trigger(Protocol):
    def specification(self) -> EventSpecification: ...

    def metadata(self) -> dict[str, Any]: ...

    def parse(self, payload: Any) -> Any: ...


@dataclass(frozen=True)
class EventTrigger:
    """Run a job when an event named `name` from `source` arrives (trigger.dev's eventTrigger).

    `schema` (a pydantic model, or any type pydantic validates) parses the payload before the
    job sees it; without one the payload is passed as sent. `filter` narrows the events by
    payload (each leaf a list of accepted values)."""

    name: str
    schema: type[Any] | None = None
    source: str = "trigger.dev"
    filter: dict[str, Any] | None = None
    title: str | None = None
    _adapter: TypeAdapter[Any] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adapter = TypeAdapter(self.schema) if self.schema is not None else None
        object.__setattr__(self, "_adapter", adapter)

    def specification(self) -> EventSpecification:
        return EventSpecification(
            name=self.name,
            title=self.title or self.name,
            source=self.source,
            icon="custom-event",
            filter=self.filter,
        )

    def metadata(self) -> dict[str, Any]:
        """The static trigger as INDEX_ENDPOINT describes it."""
        rule: dict[str, Any] = {"event": self.name, "source": self.source}
        if self.filter is not None:
            rule["payload"] = self.filter
        return {"type": "static", "title": self.name, "rule": rule}

    def parse(self, payload: Any) -> Any:
        """The payload as the job receives it; raises ValidationError. An event sent without
        a payload is validated as `{}`, so a model whose fields all have defaults accepts it."""
        if self._adapter is None:
            return payload
        try:
            return self._adapter.validate_python(payload)
        except ValidationError:
            if payload is not None:
                raise
            return self._adapter.validate_python({})


def event_trigger(
    name: str,
    *,
    schema: type[Any] | None = None,
    source: str = "trigger.dev",
    filter: dict[str, Any] | None = None,
    title: str | None = None,
) -> EventTrigger:
    return EventTrigger(name=name, schema=schema, source=source, filter=filter, title=title)


class Scheduled(BaseModel):
    """A scheduled run's payload: the tick's time, and the previous tick's."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    ts: datetime
    last_timestamp: datetime | None = None


_SCHEDULED: TypeAdapter[Scheduled] = TypeAdapter(Scheduled)


@dataclass(frozen=True)
class ScheduledTrigger:
    """Run a job on a schedule: every `seconds`, or at each tick of a cron line (UTC). Each
    run gets a `Scheduled` payload."""

    seconds: int | None = None
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.cron is None):
            raise ValueError("a schedule is every `seconds` or a `cron` line, one of the two")
        if self.seconds is not None and not is_interval(self.seconds):
            raise ValueError(f"an interval is 1 to {MAX_INTERVAL_SECONDS} seconds")
        if self.cron is not None and not is_cron_line(self.cron):
            raise ValueError(f"{self.cron!r} is not a 5-field cron line (UTC)")

    def specification(self) -> EventSpecification:
        icon = "schedule-interval" if self.seconds is not None else "schedule-cron"
        return EventSpecification(
            name="trigger.scheduled", title="Schedule", source="trigger.dev", icon=icon
        )

    def metadata(self) -> dict[str, Any]:
        if self.seconds is not None:
            schedule = {"type": "interval", "options": {"seconds": self.seconds}}
        else:
            schedule = {"type": "cron", "options": {"cron": self.cron}}
        return {"type": "scheduled", "schedule": schedule}

    def parse(self, payload: Any) -> Scheduled:
        return _SCHEDULED.validate_python(payload)


def interval_trigger(seconds: int) -> ScheduledTrigger:
    return ScheduledTrigger(seconds=seconds)


def cron_trigger(cron: str) -> ScheduledTrigger:
    return ScheduledTrigger(cron=cron)


@dataclass(frozen=True)
class InvokeTrigger:
    """Run a job only when it is invoked (`POST /api/v1/jobs/{id}/invoke`), never for an
    event; `schema` parses the invocation's payload."""

    schema: type[Any] | None = None
    _event: EventTrigger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_event", EventTrigger("invoke", schema=self.schema))

    def specification(self) -> EventSpecification:
        return EventSpecification(
            name="invoke", title="Invoke", source="trigger.dev", icon="trigger"
        )

    def metadata(self) -> dict[str, Any]:
        return {"type": "invoke"}

    def parse(self, payload: Any) -> Any:
        return self._event.parse(payload)


def invoke_trigger(*, schema: type[Any] | None = None) -> InvokeTrigger:
    return InvokeTrigger(schema=schema)
