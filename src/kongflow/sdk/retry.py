"""When a failed task is tried again (trigger.dev's RetryOptions and calculateRetryAt)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from kongflow.protocol import Wire


class RetryOptions(Wire):
    """How often and how soon a task that raised is run again. Unset fields take
    `DEFAULT_RETRY_OPTIONS`' values; `limit` counts every attempt, the first included.

    The n-th retry waits `min_timeout_in_ms * factor ** (n - 1)` milliseconds (times a random
    1 to 2 when `randomize`), at most `max_timeout_in_ms`."""

    limit: int | None = Field(default=None, ge=0)
    factor: int | float | None = Field(default=None, gt=0)
    min_timeout_in_ms: int | float | None = Field(default=None, ge=0)
    max_timeout_in_ms: int | float | None = Field(default=None, ge=0)
    randomize: bool | None = None


DEFAULT_RETRY_OPTIONS = RetryOptions(
    limit=5, factor=1.8, min_timeout_in_ms=1000, max_timeout_in_ms=60000, randomize=True
)
#: trigger.dev's `retry.standardBackoff` and `retry.exponentialBackoff` presets.
STANDARD_BACKOFF = RetryOptions(
    limit=8, factor=1.8, min_timeout_in_ms=500, max_timeout_in_ms=30000, randomize=True
)
EXPONENTIAL_BACKOFF = RetryOptions(
    limit=8, factor=2, min_timeout_in_ms=1000, max_timeout_in_ms=30000, randomize=True
)


def _js_round(value: float) -> int:
    """Math.round: halves go up."""
    return math.floor(value + 0.5)


def _option(options: RetryOptions, name: str) -> Any:
    value = getattr(options, name)
    return getattr(DEFAULT_RETRY_OPTIONS, name) if value is None else value


def retry_delay_ms(options: RetryOptions, attempts: int) -> int | None:
    """How long to wait before retrying a task whose `attempts` earlier tries failed (the
    task's `attempts - 1` when its current try has just failed); None when out of tries."""
    limit: int = _option(options, "limit")
    if attempts + 1 >= limit:
        return None
    factor: float = _option(options, "factor")
    minimum: float = _option(options, "min_timeout_in_ms")
    maximum: float = _option(options, "max_timeout_in_ms")
    scale = random.random() + 1 if _option(options, "randomize") else 1
    try:
        timeout = scale * max(float(minimum), 1.0) * float(factor) ** max(attempts - 1, 0)
    except OverflowError:  # JavaScript's Infinity: capped below
        timeout = math.inf
    if math.isinf(timeout):
        return int(maximum)
    return int(min(_js_round(timeout), maximum))


def calculate_retry_at(
    options: RetryOptions, attempts: int, *, now: datetime | None = None
) -> datetime | None:
    """When to retry (trigger.dev's calculateRetryAt), or None when out of tries."""
    delay = retry_delay_ms(options, attempts)
    if delay is None:
        return None
    return (now or datetime.now(UTC)) + timedelta(milliseconds=delay)
