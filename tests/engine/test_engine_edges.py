"""Edge cases of the engine: races on claim, unstorable results, retired jobs, threads, fencing,
lock ordering, leases."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from kongflow import Client, JobSpec, RunningJob, Snooze, Task, Worker
from kongflow.engine.completer import COMPLETED, Completer
from kongflow.engine.sql import engine_sql
from kongflow.settings import validate_schema
from tests.support.helpers import wait_for_state


def q(client: Client, text: str) -> Any:
    return text.replace("S.", f'"{client.schema}".')


async def register(client: Client, worker: str, lease: str = "30 seconds") -> None:
    async with client.pool.connection() as conn:
        await conn.execute(
            q(
                client,
                "insert into S._workers (id, hostname, pid, tasks, concurrency, lease)"
                " values (%s, 'h', 1, '{}', 1, %s::interval)",
            ),
            (worker, lease),
        )


async def test_claim_rechecks_a_job_replaced_while_it_waited(
    client: Client, database_url: str
) -> None:
    job = await client.add_job("t1", queue_name="Q", job_key="k")
    await register(client, "w")
    async with await psycopg.AsyncConnection.connect(database_url) as other:
        await other.execute("begin")
        # replaced, uncommitted: another task, another queue, due tomorrow
        await other.execute(
            q(
                client,
                "select S.add_job('t2', queue_name := 'R', job_key := 'k',"
                " run_at := now() + interval '1 day')",
            )
        )

        async def claim() -> list[Any]:
            async with client.pool.connection() as conn:
                cur = await conn.execute(
                    q(client, "select id from S._claim_jobs('w', 10, array['t1'], null, null)")
                )
                return await cur.fetchall()

        claiming = asyncio.create_task(claim())
        await asyncio.sleep(0.3)  # the claim now waits for the replacing transaction
        await other.commit()
        assert await claiming == []
    after = await client.get_job(job.id)
    assert after is not None
    assert (after.state, after.task_identifier, after.queue_name) == ("scheduled", "t2", "R")


async def test_unstorable_results_do_not_block_other_results(client: Client) -> None:
    async def weird(payload: dict[str, str], job: RunningJob) -> Any:
        if payload["kind"] == "nan":
            return float("nan")
        if payload["kind"] == "nul":
            raise ValueError("bad \x00 byte and a lone \ud800 surrogate")
        return "fine"

    jobs = await client.add_jobs(
        [JobSpec("weird", {"kind": k}, max_attempts=1) for k in ("nan", "nul", "ok")]
    )
    async with Worker(client.pool, {"weird": weird}, schema=client.schema) as worker:
        await worker.drain()
    nan, nul, ok = [await client.get_job(j.id) for j in jobs]
    assert nan is not None and (nan.state, nan.result) == ("completed", None)
    assert nul is not None and nul.state == "failed"
    assert "bad" in (nul.last_error or "")
    assert ok is not None and (ok.state, ok.result) == ("completed", "fine")


async def test_a_result_the_database_refuses_completes_its_job_without_it_and_spares_the_rest(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The completer's own guard, below the worker's checks: a batch the database refuses is
    written one result at a time, and the job whose result is refused completes without it,
    with a warning that names it."""
    jobs = await client.add_jobs([JobSpec("t") for _ in range(3)])
    await register(client, "w")
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            q(client, "select id, locked_at from S._claim_jobs('w', 3, array['t'], null, null)")
        )
        claimed = {job_id: locked_at.isoformat() for job_id, locked_at in await cur.fetchall()}
    assert sorted(claimed) == [j.id for j in jobs]
    errors: list[str] = []
    completer = Completer(
        client.pool,
        engine_sql(client.schema).settle_jobs,
        True,
        lambda: None,
        lambda error, context: errors.append(context),
    )
    bad = jobs[1].id
    for job_id, locked_at in claimed.items():
        # NaN is not JSON: the whole batch is refused
        outcome = {"outcome": "completed", "result": float("nan")} if job_id == bad else COMPLETED
        completer.submit("w", job_id, locked_at, outcome)
    running = asyncio.ensure_future(completer.run())
    try:
        await asyncio.wait_for(completer.wait_idle(), 10)
    finally:
        running.cancel()
    assert errors == ["writing job results (writing them one by one)"]
    states = {j.id: await client.get_job(j.id) for j in jobs}
    assert {i: (j.state, j.result) if j else None for i, j in states.items()} == {
        jobs[0].id: ("completed", None),
        bad: ("completed", None),
        jobs[2].id: ("completed", None),
    }
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert f"job {bad} completed" in warning.getMessage()
    assert "NaN" in warning.getMessage()
    assert warning.job_id == bad  # type: ignore[attr-defined]


async def test_a_replaced_running_job_that_snoozes_is_not_revived(client: Client) -> None:
    release = asyncio.Event()

    async def sleepy(payload: Any, job: RunningJob) -> None:
        await release.wait()
        raise Snooze(0)

    old = await client.add_job("sleepy", {"v": 1}, job_key="k")
    async with Worker(
        client.pool, {"sleepy": sleepy}, schema=client.schema, concurrency=1, poll_interval=0.1
    ):
        await wait_for_state(client, old.id, "running")
        new = await client.add_job("other_task", {"v": 2}, job_key="k")  # replaces it
        release.set()
        retired = await wait_for_state(client, old.id, "failed")
    assert retired.attempts == retired.max_attempts
    assert new.id != old.id


async def test_a_timed_out_thread_keeps_its_slot_until_it_ends(client: Client) -> None:
    calls: list[int] = []

    def stubborn(payload: dict[str, int], job: RunningJob) -> None:
        calls.append(payload["n"])
        if payload["n"] == 1:
            threading.Event().wait(0.8)  # ignores job.cancelled

    jobs = await client.add_jobs([JobSpec("stubborn", {"n": n}, max_attempts=1) for n in (1, 2)])
    async with Worker(
        client.pool,
        {"stubborn": Task(stubborn, timeout=0.2)},
        schema=client.schema,
        concurrency=1,
        poll_interval=0.05,
    ) as worker:
        await worker.drain()
    first, second = [await client.get_job(j.id) for j in jobs]
    assert first is not None and first.state == "failed"
    assert "timed out" in (first.last_error or "")
    assert second is not None and second.state == "completed"  # it really ran
    assert calls == [1, 2]


async def test_a_result_for_another_claim_is_rejected(client: Client) -> None:
    job = await client.add_job("t")
    await register(client, "w")
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            q(client, "select locked_at from S._claim_jobs('w', 1, array['t'], null, null)")
        )
        (locked_at,) = await cur.fetchone()  # type: ignore[misc]
        stale = '[{"id": %d, "locked_at": "2000-01-01T00:00:00+00:00", "outcome": "completed"}]'
        cur = await conn.execute(
            q(client, "select S._settle_jobs('w', %s::jsonb)"), (stale % job.id,)
        )
        assert (await cur.fetchone()) == ([],)
        good = (
            f'[{{"id": {job.id}, "locked_at": "{locked_at.isoformat()}", "outcome": "completed"}}]'
        )
        cur = await conn.execute(q(client, "select S._settle_jobs('w', %s::jsonb)"), (good,))
        assert (await cur.fetchone()) == ([job.id],)


async def test_concurrent_keyed_bulk_adds_do_not_deadlock(client: Client) -> None:
    keys = [f"k{i}" for i in range(50)]

    async def add(order: list[str]) -> None:
        for _ in range(10):
            await client.add_jobs([JobSpec("t", [1], job_key=k) for k in order])

    await asyncio.gather(add(keys), add(list(reversed(keys))), add(keys[::2] + keys[1::2]))
    async with client.pool.connection() as conn:
        cur = await conn.execute(q(client, "select count(*) from S.jobs"))
        assert (await cur.fetchone()) == (50,)


async def test_rescue_honours_each_workers_own_lease(client: Client) -> None:
    await register(client, "patient", "1 minute")
    await register(client, "hasty", "1 second")
    async with client.pool.connection() as conn:
        await conn.execute(q(client, "update S._workers set heartbeat_at = now() - interval '5s'"))
        await conn.execute(q(client, "select S.rescue_stale_jobs()"))
        cur = await conn.execute(q(client, "select id from S._workers"))
        assert await cur.fetchall() == [("patient",)]


def test_schema_names_leave_room_for_channel_names() -> None:
    assert validate_schema("a" * 48)
    with pytest.raises(ValueError, match="48"):
        validate_schema("a" * 49)
