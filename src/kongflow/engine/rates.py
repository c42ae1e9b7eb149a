"""Rate limits of named queues: at most `max_jobs` job starts in any window of `per`, across
every worker, enforced when jobs are claimed (a job over the limit waits, spending no attempt).
A pattern's limit applies to each queue it matches on its own, so a queue per customer
(`api:<customer>`) with a limit on `api:*` is a limit per customer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kongflow.engine.errors import InvalidJobError

_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_UNIT_NAMES = {  # every spelling accepted, to its unit
    "ms": "ms",
    "s": "s",
    "sec": "s",
    "second": "s",
    "m": "min",
    "min": "min",
    "minute": "min",
    "h": "h",
    "hour": "h",
    "d": "d",
    "day": "d",
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")
MAX_PERIOD = timedelta(days=7)


@dataclass(frozen=True)
class RateLimit:
    """`max_jobs` starts per `per` (`RateLimit.parse("100/min")`, "10/s", "5/30s", "1000/h")."""

    max_jobs: int
    per: timedelta

    def __post_init__(self) -> None:
        if isinstance(self.max_jobs, bool) or not isinstance(self.max_jobs, int):
            raise ValueError(f"max_jobs must be an integer, got {self.max_jobs!r}")
        if not 1 <= self.max_jobs <= 2**31 - 1:
            raise ValueError(f"max_jobs must be at least 1, got {self.max_jobs}")
        if not timedelta(milliseconds=1) <= self.per <= MAX_PERIOD:
            raise ValueError(f"the period must be 1 ms to 7 days, got {self.per}")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text.lower())
        word = match[3] if match else ""
        unit = _UNIT_NAMES.get(word) or _UNIT_NAMES.get(word.removesuffix("s"))  # plurals
        if match is None or unit is None:
            raise ValueError(
                f"a rate limit looks like 100/min, 10/s or 5/30s (units ms, s, min, h, d),"
                f" got {text!r}"
            )
        count = float(match[2]) if match[2] else 1.0
        return cls(int(match[1]), timedelta(seconds=count * _SECONDS[unit]))

    @classmethod
    def of(cls, value: RateLimit | str) -> RateLimit:
        if isinstance(value, RateLimit):
            return value
        if not isinstance(value, str):
            raise TypeError(
                f"a rate limit is a RateLimit or a string like '100/min', got {value!r}"
            )
        return cls.parse(value)

    def __str__(self) -> str:
        return f"{self.max_jobs}/{self.per.total_seconds():g}s"


def rate_limits_document(limits: Mapping[str, RateLimit | str | None]) -> dict[str, Any]:
    """The JSON `set_rate_limits` takes: {pattern: {max_jobs, per} or null (no limit)}; an
    error names the pattern."""
    document: dict[str, Any] = {}
    for pattern, value in limits.items():
        if not isinstance(pattern, str) or not pattern:
            raise InvalidJobError(
                "rate_limits", f"keys are queue names or patterns, got {pattern!r}"
            )
        if value is None:
            document[pattern] = None
            continue
        try:
            rate = RateLimit.of(value)
        except (TypeError, ValueError) as exc:
            raise InvalidJobError(f"rate_limits[{pattern!r}]", str(exc)) from None
        document[pattern] = {"max_jobs": rate.max_jobs, "per": f"{rate.per.total_seconds()} s"}
    return document
