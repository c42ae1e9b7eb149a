"""Maintenance: retention, queue garbage collection, leader election and failover, metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import timedelta
from typing import Any

from kongflow import Client, FixedBackoff, JobSpec, RunningJob, Task, Worker
from kongflow.engine.hooks import HookSet
from kongflow.engine.maintenance import Maintenance, MaintenanceOptions
from kongflow.engine.metrics import Metrics
from kongflow.engine.sql import engine_sql
from tests.support.helpers import free_port, mark_running


async def _sql(client: Client, query: str, params: Any = None) -> list[Any]:
    async with client.pool.connection() as conn:
        cur = await conn.execute(query.replace("S.", f'"{client.schema}".'), params)
        return await cur.fetchall() if cur.description else []


def _maintenance(
    client: Client, holder: str = "w1", lease: float = 30, **options: Any
) -> Maintenance:
    return Maintenance(
        client.pool,
        engine_sql(client.schema),
        lambda: holder,
        lease,
        MaintenanceOptions(**options),
        HookSet([]),
    )


async def test_retention_deletes_only_what_is_past_it(client: Client) -> None:
    jobs = await client.add_jobs([JobSpec("t") for _ in range(8)])
    ids = [j.id for j in jobs]
    old_done, new_done, old_cancelled, old_failed, new_failed, old_waiting, running, _ = ids
    await client.complete_jobs([old_done, new_done])
    await client.cancel_job(old_cancelled)
    await client.permanently_fail_jobs([old_failed, new_failed])
    await mark_running(client, running)
    await _sql(
        client,
        "update S._finished_jobs set finished_at = now() - interval '2 hours' where id = any(%s)",
        ([old_done, old_cancelled],),
    )
    await _sql(
        client,
        "update S._jobs set updated_at = now() - interval '8 days',"
        " created_at = now() - interval '8 days' where id = any(%s)",
        ([old_failed, old_waiting, running],),
    )

    deleted = await _maintenance(client).cleanup()

    assert deleted == (2, 1)
    remaining = {j for j in ids if await client.get_job(j) is not None}
    assert remaining == set(ids) - {old_done, old_cancelled, old_failed}


async def test_cleanup_works_through_large_backlogs_in_batches(client: Client) -> None:
    jobs = await client.add_jobs([JobSpec("t") for _ in range(2500)])
    await client.complete_jobs([j.id for j in jobs])
    await _sql(client, "update S._finished_jobs set finished_at = now() - interval '1 day'")
    assert await _maintenance(client, cleanup_batch=1000).cleanup() == (2500, 0)
    assert await _sql(client, "select count(*) from S._finished_jobs") == [(0,)]


async def test_zero_retention_keeps_no_completed_jobs(client: Client) -> None:
    async def ok(payload: Any, job: RunningJob) -> None:
        return None

    job = await client.add_job("ok")
    async with Worker(
        client.pool,
        {"ok": ok},
        schema=client.schema,
        maintenance=MaintenanceOptions(completed_retention=timedelta(0)),
    ) as worker:
        await worker.drain()
    assert await client.get_job(job.id) is None


async def test_empty_queues_are_collected_but_not_paused_or_busy_ones(client: Client) -> None:
    done = await client.add_job("t", queue_name="emptied")
    await client.add_job("t", queue_name="busy")
    await client.pause_queue("held")
    await client.complete_jobs([done.id])
    await _maintenance(client).cleanup()
    names = await _sql(client, "select queue_name from S._job_queues order by 1")
    assert names == [("busy",), ("held",)]
    # a collected queue comes back when used again
    again = await client.add_job("t", queue_name="emptied")
    assert again.queue_name == "emptied"


async def test_one_leader_at_a_time_and_failover_when_its_lease_expires(client: Client) -> None:
    a = _maintenance(client, "worker-a", lease=0.5)
    b = _maintenance(client, "worker-b", lease=0.5)
    await a.run_once()
    await b.run_once()
    assert (a.is_leader, b.is_leader) == (True, False)
    await a.run_once()  # renewing keeps it
    await b.run_once()
    assert (a.is_leader, b.is_leader) == (True, False)
    await asyncio.sleep(0.7)  # a stops renewing (crashed)
    await b.run_once()
    await a.run_once()
    assert (a.is_leader, b.is_leader) == (False, True)


async def test_workers_hand_over_leadership_when_the_leader_stops(client: Client) -> None:
    async def ok(payload: Any, job: RunningJob) -> None:
        return None

    options = {"schema": client.schema, "lease": 1.0, "poll_interval": 0.1}
    first = Worker(client.pool, {"ok": ok}, **options)
    second = Worker(client.pool, {"ok": ok}, **options)
    await first.start()
    await second.start()
    try:
        for _ in range(50):
            leaders = [w for w in (first, second) if w.maintenance and w.maintenance.is_leader]
            if leaders:
                break
            await asyncio.sleep(0.1)
        (leader,) = leaders
        follower = second if leader is first else first
        await leader.stop()
        for _ in range(50):
            if follower.maintenance and follower.maintenance.is_leader:
                break
            await asyncio.sleep(0.1)
        assert follower.maintenance is not None and follower.maintenance.is_leader
    finally:
        await first.stop()
        await second.stop()


async def test_metrics_count_and_are_served(database_url: str, schema: str) -> None:
    metrics = Metrics()

    async def ok(payload: Any, job: RunningJob) -> None:
        return None

    async def bad(payload: Any, job: RunningJob) -> None:
        raise ValueError("no")

    async with Client(database_url, schema=schema, metrics=metrics) as client:
        await client.add_job("ok", queue_name="q")
        await client.add_job("ok")
        await client.add_job("bad", max_attempts=2)
        await client.add_job("ok", queue_name="later", run_at=None)
        await client.pause_queue("later")
        tasks = {"ok": ok, "bad": Task(bad, retry=FixedBackoff(0))}
        async with Worker(
            client.pool,
            tasks,
            schema=schema,
            metrics=metrics,
            poll_interval=0.05,
            maintenance=MaintenanceOptions(report_interval=0.1),
        ) as worker:
            await worker.drain()
            await asyncio.sleep(0.5)  # a queue report

    def value(name: str, **labels: str) -> float:
        result = metrics.registry.get_sample_value(name, labels)
        return result if result is not None else 0.0

    assert value("kongflow_jobs_enqueued_total", task="ok", queue="q") == 1
    assert value("kongflow_jobs_enqueued_total", task="ok", queue="") == 1
    assert value("kongflow_jobs_completed_total", task="ok", queue="q") == 1
    assert value("kongflow_jobs_started_total", task="bad", queue="") == 2
    assert value("kongflow_jobs_retried_total", task="bad", queue="") == 1
    assert value("kongflow_jobs_failed_total", task="bad", queue="") == 1
    assert value("kongflow_job_duration_seconds_count", task="ok", queue="") == 1
    assert value("kongflow_queue_jobs", queue="later", state="available") == 1
    assert value("kongflow_queue_oldest_available_seconds", queue="later") > 0

    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'kongflow_jobs_completed_total{queue="q",task="ok"} 1.0' in body
