"""Administration: remove, complete, fail, reschedule, cancel, get; running jobs are left alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest

from kongflow import Client, InvalidJobError
from kongflow.engine.migrate import channels
from tests.support.helpers import count_jobs, mark_running

LATER = datetime(2030, 1, 1, tzinfo=UTC)


async def test_remove_job_deletes_an_available_job(client: Client) -> None:
    job = await client.add_job("t", job_key="k")
    removed = await client.remove_job("k")
    assert removed is not None and removed.id == job.id
    assert await client.get_job(job.id) is None


async def test_remove_job_stops_retries_of_a_running_job(client: Client) -> None:
    job = await client.add_job("t", job_key="k")
    await mark_running(client, job.id)
    removed = await client.remove_job("k")
    assert removed is not None
    assert (removed.id, removed.key, removed.state) == (job.id, None, "running")
    assert removed.attempts == removed.max_attempts


async def test_remove_job_with_unknown_key(client: Client) -> None:
    assert await client.remove_job("nope") is None
    with pytest.raises(InvalidJobError, match="job_key"):
        await client.remove_job("")


async def test_complete_jobs_leaves_running_jobs_alone(client: Client) -> None:
    idle = await client.add_job("t")
    busy = await client.add_job("t")
    await mark_running(client, busy.id)
    done = await client.complete_jobs([idle.id, busy.id, 999_999])
    assert [j.id for j in done] == [idle.id]
    assert done[0].state == "completed"
    assert done[0].finished_at is not None
    after = await client.get_job(busy.id)
    assert after is not None and after.state == "running"
    assert await count_jobs(client) == 1  # the hot set no longer holds the completed job


async def test_permanently_fail_jobs(client: Client) -> None:
    idle = await client.add_job("t")
    busy = await client.add_job("t")
    await mark_running(client, busy.id)
    failed = await client.permanently_fail_jobs([idle.id, busy.id], "not wanted")
    assert [j.id for j in failed] == [idle.id]
    assert failed[0].state == "failed"
    assert failed[0].last_error == "not wanted"
    assert failed[0].errors[-1]["message"] == "not wanted"
    (default,) = await client.permanently_fail_jobs([(await client.add_job("t")).id])
    assert default.last_error == "Manually marked as failed"


async def test_reschedule_jobs(client: Client) -> None:
    idle = await client.add_job("t")
    busy = await client.add_job("t")
    await mark_running(client, busy.id)
    moved = await client.reschedule_jobs(
        [idle.id, busy.id], run_at=LATER, priority=7, attempts=2, max_attempts=9
    )
    assert [j.id for j in moved] == [idle.id]
    assert (moved[0].run_at, moved[0].priority, moved[0].attempts, moved[0].max_attempts) == (
        LATER,
        7,
        2,
        9,
    )
    untouched = await client.get_job(busy.id)
    assert untouched is not None and untouched.priority == 0
    # only what is given changes
    (again,) = await client.reschedule_jobs([idle.id], priority=1)
    assert (again.run_at, again.priority, again.max_attempts) == (LATER, 1, 9)
    with pytest.raises(InvalidJobError, match="max_attempts"):
        await client.reschedule_jobs([idle.id], max_attempts=0)


async def test_reschedule_revives_a_permanently_failed_job(client: Client) -> None:
    job = await client.add_job("t", max_attempts=1)
    await client.permanently_fail_jobs([job.id])
    (revived,) = await client.reschedule_jobs([job.id], attempts=0)
    assert revived.state == "available"


async def test_cancel_a_queued_job(client: Client) -> None:
    job = await client.add_job("t", job_key="k")
    cancelled = await client.cancel_job(job.id)
    assert cancelled is not None and cancelled.state == "cancelled"
    assert await count_jobs(client) == 0
    # its key is free again
    assert (await client.add_job("t", job_key="k")).id != job.id
    # cancelling again reports the finished job unchanged
    again = await client.cancel_job(job.id)
    assert again is not None and again.state == "cancelled"


async def test_cancel_a_running_job_asks_its_worker(client: Client, database_url: str) -> None:
    job = await client.add_job("t", max_attempts=5)
    await mark_running(client, job.id)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f'listen "{channels(client.schema)["cancel"]}"')  # type: ignore[arg-type]
        cancelled = await client.cancel_job(job.id)
        notify = await asyncio.wait_for(anext(listener.notifies()), 2)
    assert notify.payload == str(job.id)
    assert cancelled is not None
    assert cancelled.state == "running"
    assert cancelled.cancel_requested_at is not None
    assert cancelled.attempts == cancelled.max_attempts  # never retried


async def test_cancel_and_get_unknown_job(client: Client) -> None:
    assert await client.cancel_job(123_456) is None
    assert await client.get_job(123_456) is None
