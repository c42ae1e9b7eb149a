"""Cron: graphile-worker's crontab format, and a scheduler that enqueues each tick exactly once.

A crontab line is `min hour dom month dow task ?opts {payload}` (UTC), with options `id`, `fill`
(backfill window, e.g. `1d12h`), `max` (max attempts), `queue`, `jobKey`, `jobKeyMode` and
`priority`. Every worker may run the scheduler: the database lets one transaction take each tick.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from croniter import croniter
from psycopg_pool import AsyncConnectionPool

from kongflow.engine.errors import KongflowError
from kongflow.engine.models import (
    JOB_KEY_MODES,
    MAX_ATTEMPTS_LIMIT,
    check_payload_text,
    text_problem,
)

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_OPTIONS = {"id", "fill", "max", "queue", "jobKey", "jobKeyMode", "priority"}
_INT32 = 2**31
_DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30}


class CrontabError(KongflowError, ValueError):
    """A crontab line is invalid; `line` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"crontab line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class CronItem:
    """One recurring job. `identifier` (default: the task) names it across restarts."""

    pattern: str
    task: str
    identifier: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    fill: timedelta | None = None
    max_attempts: int | None = None
    queue_name: str | None = None
    job_key: str | None = None
    job_key_mode: str | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        for name in ("pattern", "task", "identifier", "queue_name", "job_key"):
            value = getattr(self, name)
            problem = None if value is None else text_problem(value)
            if problem is not None:
                raise ValueError(f"{name} {problem}")
        check_payload_text(self.payload)
        if not croniter.is_valid(self.pattern) or len(self.pattern.split()) != 5:
            raise ValueError(f"invalid cron pattern {self.pattern!r} (five fields, UTC)")
        if _never_fires(self.pattern):
            raise ValueError(
                f"cron pattern {self.pattern!r} can never fire: no month it allows has a day"
                " of the month it allows"
            )
        if not self.identifier:
            object.__setattr__(self, "identifier", self.task)
        if self.job_key_mode is not None and self.job_key_mode not in JOB_KEY_MODES:
            raise ValueError(f"jobKeyMode must be one of {', '.join(JOB_KEY_MODES)}")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            limit = MAX_ATTEMPTS_LIMIT
            raise ValueError(
                f"max (max attempts) must be from 1 to {limit}, got {self.max_attempts}"
            )
        if self.priority is not None and not -_INT32 <= self.priority < _INT32:
            raise ValueError(f"priority must be a 32-bit integer, got {self.priority}")

    def matches(self, minute: datetime) -> bool:
        return bool(croniter.match(self.pattern, minute))

    def tick(self, ts: datetime, backfilled: bool) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "ts": ts.isoformat(),
            "backfilled": backfilled,
            "task": self.task,
            "payload": self.payload,
            "queue_name": self.queue_name,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "job_key": self.job_key,
            "job_key_mode": self.job_key_mode,
        }


def _never_fires(pattern: str) -> bool:
    """Whether the day-of-month and month fields exclude each other (`0 0 30 2 *`). A restricted
    day of the week fires on its own (cron's rule: either day field matches), and so does
    `L` (the last day of the month)."""
    fields, _ = croniter.expand(pattern)
    days, months, weekdays = fields[2], fields[3], fields[4]
    if days == ["*"] or weekdays != ["*"] or not all(isinstance(d, int) for d in days):
        return False
    allowed = range(1, 13) if months == ["*"] else months
    return all(min(days) > _DAYS_IN_MONTH.get(int(month), 31) for month in allowed)


def parse_duration(text: str) -> timedelta:
    """`4w3d2h1m30s` -> timedelta."""
    if not text or _DURATION.sub("", text):
        raise ValueError(f"a duration looks like 1w2d3h4m5s, got {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


def parse_crontab(text: str) -> list[CronItem]:
    """Parse crontab text; raises CrontabError naming the line and what is wrong."""
    items: list[CronItem] = []
    seen: dict[str, int] = {}
    # Lines as editors count them: split at line feeds only (splitlines() also splits at form
    # feeds, separators and others, which would shift every later line number).
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\x00" in line:
            raise CrontabError(number, "contains a NUL character")
        try:
            item = _parse_line(line)
        except ValueError as exc:
            raise CrontabError(number, str(exc)) from None
        if item.identifier in seen:
            raise CrontabError(
                number,
                f"identifier {item.identifier!r} is already used on line {seen[item.identifier]}"
                " (add ?id=... to tell them apart)",
            )
        seen[item.identifier] = number
        items.append(item)
    return items


def _parse_line(line: str) -> CronItem:
    parts = line.split(None, 6)
    if len(parts) < 6:
        raise ValueError("expected 'min hour dom month dow task [?opts] [{payload}]'")
    pattern, task = " ".join(parts[:5]), parts[5]
    rest = parts[6].strip() if len(parts) > 6 else ""
    options: dict[str, str] = {}
    if rest.startswith("?"):
        query, _, rest = rest[1:].partition(" ")
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        options = dict(pairs)
        rest = rest.strip()
        repeated = sorted({name for name, _ in pairs if sum(n == name for n, _ in pairs) > 1})
        if repeated:
            raise ValueError(f"option(s) given more than once: {', '.join(repeated)}")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    payload: dict[str, Any] = {}
    if rest:
        try:
            payload = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the payload is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ValueError("the payload must be a JSON object")
    return CronItem(
        pattern=pattern,
        task=task,
        identifier=options.get("id", ""),
        payload=payload,
        fill=parse_duration(options["fill"]) if "fill" in options else None,
        max_attempts=_int_option(options, "max"),
        queue_name=options.get("queue") or None,
        job_key=options.get("jobKey") or None,
        job_key_mode=options.get("jobKeyMode") or None,
        priority=_int_option(options, "priority"),
    )


def _int_option(options: dict[str, str], name: str) -> int | None:
    if name not in options:
        return None
    try:
        return int(options[name])
    except ValueError:
        raise ValueError(f"option {name} must be an integer, got {options[name]!r}") from None


def as_cron_items(crontab: str | Iterable[CronItem] | None) -> list[CronItem]:
    if crontab is None:
        return []
    if isinstance(crontab, str):
        return parse_crontab(crontab)
    return list(crontab)


def _minute(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


class CronScheduler:
    """Enqueues the ticks of `items` that fall due. `clock` is injectable for tests."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        sql: Any,
        items: Sequence[CronItem],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._sql = sql
        self.items = list(items)
        self.clock = clock
        self._last_minute: datetime | None = None

    async def start(self) -> list[int]:
        """Register the items, and backfill missed ticks of those known before (`fill`). Like
        graphile-worker, a tick is otherwise only taken while some worker runs at that minute."""
        now = self.clock()
        self._last_minute = _minute(now)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._sql.register_crontabs, ([i.identifier for i in self.items], now)
            )
            known = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
            described = [
                {"identifier": i.identifier, "pattern": i.pattern, "task": i.task}
                for i in self.items
            ]
            await conn.execute(self._sql.describe_crontabs, (json.dumps(described),))
        ticks = []
        for item in self.items:
            if item.fill is None or item.identifier not in known:
                continue
            known_since, last = known[item.identifier]
            since = max(now - item.fill, last or known_since)
            ticks += [
                item.tick(ts, True)
                for ts in _minutes_between(since, self._last_minute)
                if item.matches(ts)
            ]
        return await self._schedule(ticks)

    async def run_due(self) -> list[int]:
        """Enqueue the ticks of every minute since the last call, up to the clock's minute."""
        assert self._last_minute is not None, "call start() first"
        now_minute = _minute(self.clock())
        minutes = _minutes_between(self._last_minute, now_minute)
        self._last_minute = max(self._last_minute, now_minute)
        ticks = [i.tick(ts, False) for ts in minutes for i in self.items if i.matches(ts)]
        return await self._schedule(ticks)

    def seconds_to_next_minute(self) -> float:
        now = self.clock()
        return (_minute(now) + timedelta(minutes=1) - now).total_seconds()

    async def _schedule(self, ticks: list[dict[str, Any]]) -> list[int]:
        if not ticks:
            return []
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._sql.schedule_cron, (json.dumps(ticks),))
            row = await cur.fetchone()
        return list(row[0]) if row else []


def _minutes_between(after: datetime, until: datetime) -> list[datetime]:
    """Whole minutes in (after, until]."""
    minute = _minute(after) + timedelta(minutes=1)
    result = []
    while minute <= until:
        result.append(minute)
        minute += timedelta(minutes=1)
    return result
