"""A worker's options as one typed value, checked in one place.

The worker, its command line and the typed catalog all configure a worker; validating here, once,
means a bad value is refused before anything connects, with an error naming the option, whichever
way it came in. The value is frozen: the worker's parts read it as it was checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kongflow.engine.cron import CronItem, as_cron_items
from kongflow.engine.hooks import WorkerHooks
from kongflow.engine.maintenance import MaintenanceOptions, QueueReporter
from kongflow.engine.rates import RateLimit, rate_limits_document
from kongflow.settings import env_schema, validate_schema

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    from kongflow.engine.metrics import Metrics

ForbiddenFlags = (
    Sequence[str]
    | Callable[[], Sequence[str] | None]
    | Callable[[], Awaitable[Sequence[str] | None]]
)
DEFAULT_MAINTENANCE = MaintenanceOptions()


def queue_patterns(queues: Sequence[str] | None) -> list[str] | None:
    """Queue names or `*` patterns as LIKE patterns."""
    if queues is None:
        return None
    escaped = (q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for q in queues)
    return [q.replace("*", "%") for q in escaped]


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """How a worker runs.

    - `concurrency`: jobs run at once by this worker.
    - `poll_interval`: seconds between looks for work when nothing wakes the worker.
    - `poll_only`: for transaction-mode poolers (PgBouncer): no LISTEN, look for work every
      `poll_interval`; the pool the worker opens prepares no statements.
    - `queues`: serve only these named queues (names or `runs:*` patterns); default: every queue
      and jobs with no queue.
    - `queue_limits`: global limits for queues by name or pattern, stored in the database for
      every worker (a named queue without one runs one job at a time).
    - `rate_limits`: starts per window for queues by name or pattern (`{"emails": "100/min"}`),
      stored in the database for every worker (see `kongflow.engine.rates`).
    - `forbidden_flags`: skip jobs with any of these flags; a list, or a function (sync or async)
      asked before each claim.
    - `schema`: the kongflow schema to work in.
    - `lease`: a worker silent for longer is presumed dead and its jobs are released (ready at
      once, the lost attempt counted); a job locked for longer under this worker that it does
      not hold (a claim whose reply was lost) is released by its own heartbeat.
    - `heartbeat_interval`: seconds between heartbeats, at most half the lease; default a third
      of the lease, at most 10 s (see `heartbeat_seconds`).
    - `hooks`: event hooks.
    - `crontab`: recurring jobs (graphile-worker's crontab text, or CronItems; see `cron_items`).
    - `maintenance`: retention and cleanup settings for when this worker is the elected leader
      (None: never lead). `queue_reporters` receive per-queue figures periodically.
    - `metrics`: Prometheus metrics fed by this worker.
    - `migrate`: apply pending migrations at start.
    """

    concurrency: int = 10
    poll_interval: float = 1.0
    poll_only: bool = False
    queues: Sequence[str] | None = None
    queue_limits: Mapping[str, int] | None = None
    rate_limits: Mapping[str, RateLimit | str] | None = None
    forbidden_flags: ForbiddenFlags | None = None
    schema: str = field(default_factory=env_schema)
    lease: float = 30.0
    heartbeat_interval: float | None = None
    hooks: Sequence[WorkerHooks] = ()
    crontab: str | Iterable[CronItem] | None = None
    maintenance: MaintenanceOptions | None = DEFAULT_MAINTENANCE
    queue_reporters: Sequence[QueueReporter] = ()
    metrics: Metrics | None = None
    migrate: bool = True
    # Derived from the options above when checked.
    heartbeat_seconds: float = field(init=False, repr=False, compare=False)
    cron_items: tuple[CronItem, ...] = field(init=False, repr=False, compare=False)
    queue_patterns: list[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise TypeError(f"concurrency must be an integer, got {self.concurrency!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        _positive("poll_interval", self.poll_interval)
        _positive("lease", self.lease)
        if self.heartbeat_interval is not None:
            _positive("heartbeat_interval", self.heartbeat_interval)
        heartbeat = self.heartbeat_interval or min(self.lease / 3, 10.0)
        if heartbeat > self.lease / 2:
            raise ValueError(
                f"heartbeat_interval ({heartbeat}s) must be at most half the lease"
                f" ({self.lease}s), or the worker would be presumed dead between heartbeats"
            )
        if isinstance(self.queues, str):
            raise TypeError(f"queues must be a list of queue names, not the string {self.queues!r}")
        limits = dict(self.queue_limits or {})
        for name, limit in limits.items():
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"queue_limits[{name!r}] must be an integer >= 1, got {limit!r}")
        rate_limits_document(self.rate_limits or {})  # checked here, applied at start
        crontab = self.crontab
        cron_items = tuple(as_cron_items(crontab))
        set_ = object.__setattr__  # frozen: the checked values are stored once, here
        set_(self, "schema", validate_schema(self.schema))
        set_(self, "queues", None if self.queues is None else tuple(self.queues))
        set_(self, "queue_limits", limits)
        set_(self, "hooks", tuple(self.hooks))
        set_(self, "queue_reporters", tuple(self.queue_reporters))
        # An iterable of items is kept as a tuple, so `replace()` can read it again.
        if crontab is not None and not isinstance(crontab, str):
            set_(self, "crontab", cron_items)
        set_(self, "heartbeat_seconds", heartbeat)
        set_(self, "cron_items", cron_items)
        set_(self, "queue_patterns", queue_patterns(self.queues))

    @classmethod
    def of(cls, settings: WorkerSettings | None, options: Mapping[str, Any]) -> WorkerSettings:
        """`settings` with `options` (keywords named as the fields) applied over it."""
        if settings is None:
            return cls(**options)
        if not isinstance(settings, WorkerSettings):
            raise TypeError(f"settings must be a WorkerSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings, **options) if options else settings


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
