"""Job keys with graphile-worker's exact rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg

from kongflow import Client
from tests.support.helpers import count_jobs, mark_running

LATER = datetime(2030, 1, 1, tzinfo=UTC)
LATEST = datetime(2031, 1, 1, tzinfo=UTC)


async def test_replace_updates_an_available_job_in_place(client: Client) -> None:
    first = await client.add_job(
        "task_a", {"v": 1}, job_key="k", run_at=LATER, priority=3, max_attempts=5, flags=["x"]
    )
    await client.reschedule_jobs([first.id], attempts=2)
    async with client.pool.connection() as conn:
        await conn.execute(
            f'update "{client.schema}"._jobs set last_error = %s where id = %s',
            ("boom", first.id),
        )

    second = await client.add_job(
        "task_b",
        {"v": 2},
        job_key="k",
        queue_name="q",
        run_at=LATEST,
        priority=1,
        max_attempts=7,
        flags=["y"],
    )

    assert second.id == first.id
    assert second.revision == first.revision + 1
    assert (second.task_identifier, second.payload, second.queue_name) == ("task_b", {"v": 2}, "q")
    assert (second.run_at, second.priority, second.max_attempts) == (LATEST, 1, 7)
    assert second.flags == ["y"]
    assert second.attempts == 0
    assert second.last_error is None
    assert await count_jobs(client) == 1


async def test_keys_are_unique_across_task_identifiers(client: Client) -> None:
    a = await client.add_job("one", job_key="shared")
    b = await client.add_job("two", job_key="shared")
    assert a.id == b.id
    assert b.task_identifier == "two"


async def test_array_payloads_are_concatenated_on_replace(client: Client) -> None:
    await client.add_job("batch", [1, 2], job_key="k")
    job = await client.add_job("batch", [3], job_key="k")
    assert job.payload == [1, 2, 3]
    # an object replaces an array, it is not merged
    job = await client.add_job("batch", {"n": 4}, job_key="k")
    assert job.payload == {"n": 4}


async def test_preserve_run_at_keeps_run_at_while_attempts_is_zero(client: Client) -> None:
    first = await client.add_job("t", job_key="k", run_at=LATER)
    again = await client.add_job(
        "t", {"n": 2}, job_key="k", run_at=LATEST, job_key_mode="preserve_run_at"
    )
    assert again.id == first.id
    assert again.run_at == LATER
    assert again.payload == {"n": 2}


async def test_preserve_run_at_replaces_run_at_once_attempted(client: Client) -> None:
    first = await client.add_job("t", job_key="k", run_at=LATER)
    await client.reschedule_jobs([first.id], attempts=1)  # as after a failed attempt
    again = await client.add_job("t", job_key="k", run_at=LATEST, job_key_mode="preserve_run_at")
    assert again.id == first.id
    assert again.run_at == LATEST
    assert again.attempts == 0


async def test_running_job_loses_its_key_and_a_new_job_is_inserted(client: Client) -> None:
    running = await client.add_job("t", {"old": True}, job_key="k", max_attempts=10)
    await mark_running(client, running.id)

    fresh = await client.add_job("t", {"new": True}, job_key="k")

    assert fresh.id != running.id
    assert fresh.key == "k"
    assert fresh.state == "available"
    old = await client.get_job(running.id)
    assert old is not None
    assert old.key is None
    assert old.state == "running"
    assert old.attempts == old.max_attempts == 10  # finishes this attempt, never retried
    assert old.payload == {"old": True}


async def test_permanently_failed_job_loses_its_key_and_a_new_job_is_inserted(
    client: Client,
) -> None:
    failed = await client.add_job("t", job_key="k")
    await client.permanently_fail_jobs([failed.id], "gave up")
    fresh = await client.add_job("t", job_key="k")
    assert fresh.id != failed.id
    old = await client.get_job(failed.id)
    assert old is not None
    assert (old.key, old.state, old.last_error) == (None, "failed", "gave up")


async def test_unsafe_dedupe_returns_the_existing_job_in_every_state(client: Client) -> None:
    available = await client.add_job("t", {"v": 1}, job_key="avail", run_at=LATER)
    dup = await client.add_job("other", {"v": 2}, job_key="avail", job_key_mode="unsafe_dedupe")
    assert dup.id == available.id
    assert (dup.task_identifier, dup.payload, dup.run_at) == ("t", {"v": 1}, LATER)
    assert dup.revision == available.revision + 1

    running = await client.add_job("t", job_key="run")
    await mark_running(client, running.id)
    dup = await client.add_job("t", job_key="run", job_key_mode="unsafe_dedupe")
    assert (dup.id, dup.state, dup.key) == (running.id, "running", "run")

    failed = await client.add_job("t", job_key="fail")
    await client.permanently_fail_jobs([failed.id])
    dup = await client.add_job("t", job_key="fail", job_key_mode="unsafe_dedupe")
    assert (dup.id, dup.state) == (failed.id, "failed")

    assert await count_jobs(client) == 3


async def test_unsafe_dedupe_inserts_when_no_job_has_the_key(client: Client) -> None:
    job = await client.add_job("t", job_key="new", job_key_mode="unsafe_dedupe")
    assert job.key == "new"
    assert job.revision == 0


async def test_a_completed_job_frees_its_key(client: Client) -> None:
    first = await client.add_job("t", job_key="k")
    await client.complete_jobs([first.id])
    second = await client.add_job("t", job_key="k")
    assert second.id != first.id
    assert second.revision == 0


async def test_sixteen_concurrent_callers_on_one_key_leave_exactly_one_available_job(
    client: Client, database_url: str
) -> None:
    async def caller(n: int, start: asyncio.Event) -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await start.wait()
            job = await client.add_job("t", [n], job_key="hot", conn=conn)
            return job.id

    for _round in range(3):
        start = asyncio.Event()
        tasks = [asyncio.create_task(caller(n, start)) for n in range(16)]
        await asyncio.sleep(0.2)  # all 16 connected
        start.set()
        ids = await asyncio.gather(*tasks)  # every call returned a job, none raised
        assert len(ids) == 16
        assert await count_jobs(client, "key = 'hot' and state = 'available'") == 1
        (job_id,) = set(ids)
        job = await client.get_job(job_id)
        assert job is not None
        # every caller's element was merged into the one job's array payload, none lost
        assert sorted(job.payload) == list(range(16))
        # next round: the key's holder is running, so the 16 callers must replace it
        await mark_running(client, job_id)

    assert await count_jobs(client, "key = 'hot'") == 1
    assert await count_jobs(client, "key is null and state = 'running'") == 2


async def test_run_at_in_the_past_is_kept(client: Client) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    job = await client.add_job("t", run_at=past, job_key="k")
    assert job.run_at == past
    assert job.state == "available"
