"""Handlers for the benchmarks: a no-op that reports how long after enqueue it started."""

from __future__ import annotations

import time
from typing import Any

from kongflow import RunningJob


async def noop(payload: dict[str, Any], job: RunningJob) -> float | None:
    """Returns seconds from payload["t"] (the enqueuer's clock) to now, if given."""
    sent = payload.get("t")
    return time.time() - sent if sent is not None else None


tasks = {"noop": noop}
