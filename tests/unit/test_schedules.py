"""Which indexed jobs are scheduled, and when their next tick is (intervalTrigger,
cronTrigger); and how long an execution may run before the SDK yields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kongflow.protocol import JobMetadata
from kongflow.service.execution import chunk_limit_ms
from kongflow.service.schedules import ScheduleSpec, schedule_of


def job(trigger: dict[str, Any]) -> JobMetadata:
    return JobMetadata.model_validate(
        {
            "id": "tick",
            "name": "Tick",
            "version": "1",
            "event": {"name": "trigger.scheduled"},
            "trigger": trigger,
        }
    )


def scheduled(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"type": "scheduled", "schedule": {"type": kind, "options": options}}


@pytest.mark.parametrize(
    ("trigger", "spec"),
    [
        (scheduled("interval", {"seconds": 60}), ScheduleSpec("interval", "60")),
        (scheduled("cron", {"cron": "*/5 * * * *"}), ScheduleSpec("cron", "*/5 * * * *")),
        (scheduled("interval", {"seconds": 0}), None),
        (scheduled("interval", {"seconds": 2_592_001}), None),
        (scheduled("interval", {"seconds": 1.5}), None),
        (scheduled("interval", {"seconds": True}), None),
        (scheduled("cron", {"cron": "61 * * * *"}), None),
        (scheduled("cron", {"cron": "* * * * * *"}), None),  # seconds field: not 5 fields
        (scheduled("cron", {}), None),
        ({"type": "static", "rule": {"event": "x"}}, None),
        ({"type": "invoke"}, None),
    ],
)
def test_the_schedule_of_an_indexed_job(trigger: dict[str, Any], spec: ScheduleSpec) -> None:
    assert schedule_of(job(trigger)) == spec


def test_next_ticks() -> None:
    at = datetime(2026, 12, 1, 10, 2, 30, tzinfo=UTC)
    assert ScheduleSpec("interval", "90").next_tick(at) == datetime(2026, 12, 1, 10, 4, tzinfo=UTC)
    assert ScheduleSpec("cron", "*/5 * * * *").next_tick(at) == datetime(
        2026, 12, 1, 10, 5, tzinfo=UTC
    )


def test_the_chunk_limit_is_just_under_the_request_timeout() -> None:
    assert chunk_limit_ms(300) == 299_650
    assert chunk_limit_ms(30) == 29_650
    # too short for the SDK's thresholds: it gets no limit, rather than yielding at each step
    assert chunk_limit_ms(1) is None
