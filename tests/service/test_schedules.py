"""Schedules as indexing leaves them: a disabled scheduled job does not fire, and re-indexing an
unchanged schedule whose chain of ticks died starts it again (without a second tick)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from kongflow.protocol import JobMetadata
from kongflow.service.schedules import tick_key
from tests.support.jobs_stack import ENDPOINT_SLUG, Stack, jobs_stack


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


def every_minute(enabled: bool = True) -> JobMetadata:
    return JobMetadata.model_validate(
        {
            "id": "tick",
            "name": "Tick",
            "version": "1",
            "event": {"name": "trigger.scheduled"},
            "trigger": {
                "type": "scheduled",
                "schedule": {"type": "interval", "options": {"seconds": 60}},
            },
            "enabled": enabled,
        }
    )


async def index(stack: Stack, job: JobMetadata) -> None:
    endpoints = await stack.jobs.endpoints.list_endpoints(stack.env)
    (endpoint,) = [e for e in endpoints if e.slug == ENDPOINT_SLUG]
    async with stack.jobs.queue.transaction() as tx:
        await stack.jobs.endpoints._register(tx, stack.env, endpoint.id, job)


async def one(stack: Stack, query: str, *args: Any) -> Any:
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(query.format(s=f'"{stack.jobs.client.schema}"'), args)  # type: ignore[arg-type]
        row = await cur.fetchone()
    return row[0] if row else None


async def ticks(stack: Stack) -> int:
    return int(await one(stack, "select count(*) from {s}._jobs where key like 'schedule:%%'"))


async def test_a_disabled_scheduled_job_does_not_fire(stack: Stack) -> None:
    await index(stack, every_minute())
    assert await one(stack, "select bool_and(active) from {s}.schedules") is True
    await index(stack, every_minute(enabled=False))
    assert await one(stack, "select bool_or(active) from {s}.schedules") is False


async def test_an_unchanged_schedule_keeps_one_tick_and_a_dead_chain_starts_again(
    stack: Stack,
) -> None:
    await index(stack, every_minute())
    schedule_id = await one(stack, "select id from {s}.schedules")
    run_at = await one(stack, "select run_at from {s}._jobs where key = %s", tick_key(schedule_id))
    await index(stack, every_minute())  # re-indexed unchanged: the same tick, not a new one
    assert await ticks(stack) == 1
    assert (
        await one(stack, "select run_at from {s}._jobs where key = %s", tick_key(schedule_id))
        == run_at
    )
    await stack.jobs.client.remove_job(tick_key(schedule_id))  # the chain dies
    assert await ticks(stack) == 0
    await index(stack, every_minute())
    assert await ticks(stack) == 1
