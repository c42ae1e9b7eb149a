"""Rescue of lost workers' jobs, on the database side: a rescued job is ready at once, ahead of
later work of its priority, still spends the attempt it lost, and wakes idle workers. (The same
with a SIGKILLed worker process is in test_worker_processes.py.)"""

from __future__ import annotations

import logging
import math

import psycopg
import pytest

from kongflow import Client, JobSpec
from kongflow.engine.hooks import HookSet
from kongflow.engine.maintenance import Maintenance, MaintenanceOptions
from kongflow.engine.migrate import channels
from kongflow.engine.sql import engine_sql
from tests.support.helpers import sql


async def register(client: Client, worker: str) -> None:
    await sql(
        client,
        "insert into S._workers (id, hostname, pid, tasks, concurrency, lease)"
        " values (%s, 'h', 1, '{}', 1, '1 second')",
        (worker,),
    )


async def claim(client: Client, worker: str, limit: int = 1) -> list[int]:
    rows = await sql(
        client, "select id from S._claim_jobs(%s, %s, array['t'], null, null)", (worker, limit)
    )
    return [row[0] for row in rows]


async def lose(client: Client, worker: str) -> list[int]:
    """The worker falls silent past its lease, and a rescue pass runs."""
    await sql(
        client,
        "update S._workers set heartbeat_at = now() - interval '1 minute' where id = %s",
        (worker,),
    )
    ((released,),) = await sql(client, "select S.rescue_stale_jobs()")
    return list(released)


async def test_a_rescued_job_keeps_its_run_at_and_runs_before_later_jobs(client: Client) -> None:
    first = await client.add_job("t")
    await register(client, "lost")
    assert await claim(client, "lost") == [first.id]
    later = await client.add_jobs([JobSpec("t") for _ in range(5)])  # queued behind it

    assert await lose(client, "lost") == [first.id]
    rescued = await client.get_job(first.id)
    assert rescued is not None
    assert (rescued.state, rescued.attempts, rescued.run_at) == ("available", 1, first.run_at)
    assert rescued.errors[-1]["type"] == "WorkerLost"

    await register(client, "next")
    assert await claim(client, "next") == [first.id]  # not later[0]
    assert await claim(client, "next", 5) == [j.id for j in later]


async def test_a_job_that_kills_every_worker_still_runs_out_of_attempts(client: Client) -> None:
    job = await client.add_job("t", max_attempts=3)
    for attempt in (1, 2, 3):
        worker = f"victim-{attempt}"
        await register(client, worker)
        assert await claim(client, worker) == [job.id]
        assert await lose(client, worker) == [job.id]
    failed = await client.get_job(job.id)
    assert failed is not None
    assert (failed.state, failed.attempts) == ("failed", 3)
    assert [e["type"] for e in failed.errors] == ["WorkerLost"] * 3
    await register(client, "survivor")
    assert await claim(client, "survivor") == []


async def test_a_rescue_wakes_idle_workers(client: Client, database_url: str) -> None:
    job = await client.add_job("t")
    await register(client, "lost")
    assert await claim(client, "lost") == [job.id]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f'listen "{channels(client.schema)["jobs"]}"')  # type: ignore[arg-type]
        assert await lose(client, "lost") == [job.id]
        notifies = listener.notifies(timeout=5, stop_after=1)
        received = [n.channel async for n in notifies]
    assert received == [channels(client.schema)["jobs"]]


@pytest.mark.parametrize("lease", [0.3, 2.0, 10.0, 30.0, 600.0])
def test_the_leader_rescues_every_few_seconds_on_a_whole_number_of_turns(lease: float) -> None:
    """A lost worker's jobs are released within its lease plus the rescue interval: at most
    5 s (half the leader's lease when shorter), kept exactly since the interval is a whole
    number of maintenance turns, and the leadership is renewed at least 3 times per lease."""
    options = MaintenanceOptions()
    interval = options.rescue_every(lease)
    assert interval == min(lease / 2, 5.0)
    maintenance = Maintenance(None, None, lambda: "w", lease, options, None)  # type: ignore[arg-type]
    turns = interval / maintenance.step
    assert math.isclose(turns, round(turns))
    assert maintenance.step <= lease / 3 + 1e-9
    assert MaintenanceOptions(rescue_interval=1.5).rescue_every(lease) == 1.5
    with pytest.raises(ValueError, match="rescue_interval"):
        MaintenanceOptions(rescue_interval=0)


async def test_each_released_job_is_logged_as_a_failed_attempt(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    job = await client.add_job("t", queue_name="mail", max_attempts=4)
    await register(client, "lost")
    assert await claim(client, "lost") == [job.id]
    await sql(client, "update S._workers set heartbeat_at = now() - interval '1 minute'")
    maintenance = Maintenance(
        client.pool,
        engine_sql(client.schema),
        lambda: "leader",
        30.0,
        MaintenanceOptions(),
        HookSet([]),
    )
    assert await maintenance.rescue() == [job.id]
    (line,) = [r for r in caplog.records if r.getMessage().startswith(f"job {job.id} ")]
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith(f"job {job.id} (task t, queue mail) attempt 1/4 failed:")
    assert (line.job_id, line.task, line.queue, line.attempt, line.max_attempts) == (  # type: ignore[attr-defined]
        job.id,
        "t",
        "mail",
        1,
        4,
    )
    assert "worker lost" in line.error  # type: ignore[attr-defined]
