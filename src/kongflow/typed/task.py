"""A typed task: its payload model, handler and enqueue options (ZodWorker's task definition)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from kongflow.engine.errors import KongflowError
from kongflow.engine.models import JobKeyMode
from kongflow.engine.tasks import RetryPolicy, RunningJob

P = TypeVar("P", bound=BaseModel)

TypedHandler = Callable[[Any, RunningJob], Awaitable[Any]]


@dataclass(frozen=True)
class TaskDefinition(Generic[P]):
    """`queue_name` and `job_key` may be functions of the payload: they then beat the per-call
    options (ZodWorker's rule); every other per-call option beats the task's default."""

    payload: type[P]
    handler: TypedHandler | None = None
    queue_name: str | Callable[[P], str] | None = None
    priority: int | None = None
    max_attempts: int | None = None
    job_key: str | Callable[[P], str] | None = None
    job_key_mode: JobKeyMode | None = None
    flags: Sequence[str] | None = None
    timeout: float | None = None
    retry: RetryPolicy | Callable[[int], float] | None = None

    def describe_queue(self) -> str | None:
        """The queue as the docs and `kongflow tasks` show it (functions by their doc)."""
        if callable(self.queue_name):
            return (self.queue_name.__doc__ or "dynamic").strip()
        return self.queue_name


class CronPayload(BaseModel):
    """What a recurring task's handler receives: the tick it runs for, and whether that tick was
    missed and is being backfilled."""

    ts: datetime
    backfilled: bool = False


@dataclass(frozen=True)
class RecurringTask:
    """ZodWorker's recurring task: a handler run on a cron `pattern` (UTC), every tick exactly
    once across workers; `fill` backfills ticks missed while no worker ran."""

    pattern: str
    handler: Callable[[CronPayload, RunningJob], Awaitable[Any]]
    fill: timedelta | None = None
    max_attempts: int | None = None
    timeout: float | None = None


class UnknownTaskError(KongflowError, LookupError):
    def __init__(self, identifier: str, known: Sequence[str]) -> None:
        super().__init__(
            f"unknown task {identifier!r}: the catalog has {', '.join(sorted(known)) or 'none'}"
        )
        self.identifier = identifier


class NoHandlerError(KongflowError):
    def __init__(self, identifier: str) -> None:
        super().__init__(
            f"task {identifier!r} has no handler registered in this process, so it is not "
            "accepted (it would never run): register one with WorkerQueue(handlers=...)"
        )
        self.identifier = identifier


class InvalidPayloadError(KongflowError, ValueError):
    """A payload does not match its task's model; `errors` lists each bad field."""

    def __init__(self, identifier: str, error: ValidationError) -> None:
        self.identifier = identifier
        self.errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(payload)", "message": e["msg"]}
            for e in error.errors()
        ]
        details = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)
        super().__init__(f"invalid payload for task {identifier!r}: {details}")
