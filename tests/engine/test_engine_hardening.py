"""What the worker and the database must agree on, and what the worker must say: a claim whose
reply was lost, a registration that disappeared, claims that never wait for each other, timeouts
that really cancel, results that cannot be stored, failed attempts, jobs nobody can run."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kongflow import Client, JobSpec, RunningJob, Task, Worker
from kongflow.cli.worker import JsonFormatter
from tests.support.helpers import in_schema, sql, wait_for_state


async def register(client: Client, worker: str) -> None:
    await sql(
        client,
        "insert into S._workers (id, hostname, pid, tasks, concurrency, lease)"
        " values (%s, 'h', 1, '{}', 1, '30 seconds')",
        (worker,),
    )


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# -- the worker and the database agree on what it holds ---------------------------------------


async def test_a_claim_whose_reply_was_lost_is_released_and_runs(
    client: Client, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim commits for the worker, but the worker never sees its answer: the job is locked
    under a live worker that keeps heartbeating. Its heartbeat says which jobs it holds, and
    the database releases the one it does not, once older than the lease."""
    attempts: list[int] = []

    async def t(payload: Any, job: RunningJob) -> None:
        attempts.append(job.attempts)

    async with Worker(client.pool, {"t": t}, schema=client.schema, lease=1.5) as worker:
        async with (
            await psycopg.AsyncConnection.connect(database_url) as other,
            other.transaction(),
        ):
            cur = await other.execute(in_schema(client, "select id from S.add_job('t')"))
            ((job_id,),) = await cur.fetchall()
            # The worker's claim, run elsewhere: its answer goes nowhere.
            cur = await other.execute(
                in_schema(client, "select id from S._claim_jobs(%s, 10, array['t'], null, null)"),
                (worker.id,),
            )
            assert await cur.fetchall() == [(job_id,)]
        done = await wait_for_state(client, job_id, "completed", timeout=30)
    assert attempts == [2]  # the lost claim spent an attempt, as a lost worker's does
    lost = done.errors[-1]
    assert (lost["type"], lost["worker"], lost["attempt"]) == ("ClaimLost", worker.id, 1)
    assert records(caplog, "never received")


async def test_the_heartbeat_leaves_running_jobs_and_unwritten_results_alone(
    client: Client,
) -> None:
    """Jobs that run for longer than the lease are held, and so are results still waiting to
    be written: neither is released."""
    release = asyncio.Event()

    async def slow(payload: Any, job: RunningJob) -> str:
        await release.wait()
        return "done"

    jobs = await client.add_jobs([JobSpec("slow") for _ in range(3)])
    async with Worker(
        client.pool, {"slow": slow}, schema=client.schema, lease=0.6, heartbeat_interval=0.1
    ) as worker:
        for job in jobs:
            await wait_for_state(client, job.id, "running")
        await asyncio.sleep(1.5)  # more than two leases of heartbeats
        assert worker._completer is not None
        worker._completer._pending.append(  # a result on its way, for the heartbeat to see
            (worker.id, -1, datetime.now(UTC).isoformat(), "{}", False)
        )
        assert worker._lease is not None
        assert -1 in worker._lease.held_jobs()
        worker._completer._pending.pop()
        release.set()
        await worker.drain()
    for job in jobs:
        done = await client.get_job(job.id)
        assert done is not None
        assert (done.state, done.attempts, done.result, done.errors) == ("completed", 1, "done", [])
    assert worker.rejected_results == 0


async def test_a_busy_worker_whose_row_was_deleted_registers_again_and_keeps_its_jobs(
    client: Client,
) -> None:
    release = asyncio.Event()

    async def slow(payload: Any, job: RunningJob) -> str:
        await release.wait()
        return "done"

    job = await client.add_job("slow")
    async with Worker(
        client.pool,
        {"slow": slow},
        schema=client.schema,
        concurrency=1,  # busy: it claims nothing, only its heartbeat can notice
        heartbeat_interval=0.1,
        maintenance=None,  # no rescue of its own between the deletion and the heartbeat
    ) as worker:
        await wait_for_state(client, job.id, "running")
        await sql(client, "delete from S._workers where id = %s", (worker.id,))

        async def registered() -> bool:
            rows = await sql(client, "select 1 from S._workers where id = %s", (worker.id,))
            return bool(rows)

        await until(registered, 10, "the worker to register again")
        running = await client.get_job(job.id)
        assert running is not None and (running.state, running.locked_by) == ("running", worker.id)
        assert await sql(client, "select S.rescue_stale_jobs()") == [([],)]  # nothing to rescue
        release.set()
        done = await wait_for_state(client, job.id, "completed")
    assert (done.result, done.attempts) == ("done", 1)
    assert worker.rejected_results == 0


# -- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize("queued", [False, True], ids=["no-queue", "named-queues"])
async def test_a_claim_never_waits_for_another_claim_in_flight(
    client: Client, database_url: str, queued: bool
) -> None:
    """One claim's transaction stays open on the rows it took (its job, and the queues it
    looked at: two per job it asked for); a second worker's claim gets the other jobs at once
    rather than waiting for it."""
    names = ("x", "y", "z") if queued else (None, None, None)
    first, *others = await client.add_jobs([JobSpec("t", queue_name=n) for n in names])
    await register(client, "a")
    await register(client, "b")
    claim = "select id from S._claim_jobs(%s, %s, array['t'], null, null) order by id"
    async with (
        await psycopg.AsyncConnection.connect(database_url) as holder,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other,
    ):
        cur = await holder.execute(in_schema(client, claim), ("a", 1))  # its transaction stays open
        assert await cur.fetchall() == [(first.id,)]
        # Waiting on the open claim would end here, with an error, instead of never.
        await other.execute("set statement_timeout = '10s'")
        cur = await other.execute(in_schema(client, claim), ("b", 10))
        taken = [row[0] for row in await cur.fetchall()]
        # Queue y was locked by the first claim, which looked at it: it is skipped, not waited for.
        assert taken == ([others[1].id] if queued else [j.id for j in others])
        await holder.rollback()


# -- timeouts ---------------------------------------------------------------------------------


async def test_a_timed_out_async_handler_is_cancelled_not_only_failed(client: Client) -> None:
    seen: list[str] = []

    async def slow(payload: Any, job: RunningJob) -> None:
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("ran on")

    job = await client.add_job("slow", max_attempts=1)
    async with Worker(
        client.pool, {"slow": Task(slow, timeout=0.2)}, schema=client.schema, poll_interval=0.1
    ):
        failed = await wait_for_state(client, job.id, "failed")
        await asyncio.sleep(1.5)  # past the end of the handler's sleep
    assert "timed out" in (failed.last_error or "")
    assert seen == ["cancelled"]


# -- what the worker says ---------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({"text": "a\x00b"}, "NUL"),
        (["\ud800"], "lone surrogate"),
        ({"when": Opaque()}, "not JSON-serialisable"),
        (float("inf"), "not JSON-serialisable"),
    ],
    ids=["nul", "surrogate", "object", "infinity"],
)
async def test_a_result_that_cannot_be_stored_completes_the_job_with_a_warning(
    client: Client, caplog: pytest.LogCaptureFixture, result: Any, reason: str
) -> None:
    async def handler(payload: Any, job: RunningJob) -> Any:
        return result

    job = await client.add_job("t", queue_name="results")
    async with Worker(client.pool, {"t": handler}, schema=client.schema) as worker:
        await worker.drain()
    done = await client.get_job(job.id)
    assert done is not None and (done.state, done.result) == ("completed", None)
    (warning,) = records(caplog, "cannot be stored")
    assert warning.levelno == logging.WARNING
    assert f"job {job.id} (task t, queue results)" in warning.getMessage()
    assert reason in warning.getMessage()
    assert (warning.job_id, warning.task, warning.queue) == (job.id, "t", "results")  # type: ignore[attr-defined]


async def test_every_failed_attempt_is_logged_with_its_job_and_error_as_json_fields(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(payload: Any, job: RunningJob) -> None:
        raise ValueError(f"boom {job.attempts}")

    job = await client.add_job("boom", queue_name="mail", max_attempts=2)
    async with Worker(
        client.pool,
        {"boom": Task(boom, retry=lambda attempts: 0)},
        schema=client.schema,
        poll_interval=0.05,
    ) as worker:
        await wait_for_state(client, job.id, "failed")
        await worker.drain()
    failures = [
        r for r in caplog.records if "failed" in r.getMessage() and r.levelname == "WARNING"
    ]
    assert [r.getMessage().split(" failed")[0] for r in failures] == [
        f"job {job.id} (task boom, queue mail) attempt 1/2",
        f"job {job.id} (task boom, queue mail) attempt 2/2",
    ]
    assert "ValueError: boom 2" in failures[1].getMessage()
    entries = [json.loads(JsonFormatter().format(r)) for r in failures]
    for attempt, entry in enumerate(entries, start=1):
        assert entry["level"] == "WARNING"
        assert (entry["job_id"], entry["task"], entry["queue"]) == (job.id, "boom", "mail")
        assert (entry["attempt"], entry["max_attempts"]) == (attempt, 2)
        assert entry["error"] == f"ValueError: boom {attempt}"
        at = datetime.fromisoformat(entry["time"])
        assert at.utcoffset() == timedelta(0)  # ISO-8601, in UTC
        assert abs(datetime.now(UTC) - at) < timedelta(minutes=5)
    assert "retry_at" in entries[0] and "retry_at" not in entries[1]


async def test_a_worker_warns_once_per_ready_task_it_has_no_handler_for_in_its_queues(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await client.add_jobs(
        [
            JobSpec("ghost"),
            JobSpec("ghost"),
            JobSpec("phantom", queue_name="mine"),
            JobSpec("elsewhere", queue_name="theirs"),  # outside this worker's queues
            JobSpec("later", run_at=datetime.now(UTC) + timedelta(hours=1)),  # not ready
            JobSpec("t", queue_name="mine"),
        ]
    )

    async def t(payload: Any, job: RunningJob) -> None:
        return None

    worker = Worker(client.pool, {"t": t}, schema=client.schema)
    worker._unknown_tasks_interval = 0.1
    scoped = Worker(client.pool, {"t": t}, schema=client.schema, queues=["mine"])
    scoped._unknown_tasks_interval = 0.1
    async with worker, scoped:
        await asyncio.sleep(1.0)  # ten looks or so
    everywhere = [r.getMessage() for r in records(caplog, f"worker {worker.id}: jobs of task")]
    in_mine = [r.getMessage() for r in records(caplog, f"worker {scoped.id}: jobs of task")]
    assert len(everywhere) == 3 and len(in_mine) == 1
    assert all("no handler" in message for message in everywhere + in_mine)
    assert sorted(m.split("'")[1] for m in everywhere) == ["elsewhere", "ghost", "phantom"]
    assert "'phantom'" in in_mine[0]


async def test_tasks_no_live_worker_takes_are_listed(client: Client) -> None:
    await client.add_jobs(
        [
            JobSpec("ghost"),
            JobSpec("ghost", queue_name="a"),
            JobSpec("t", queue_name="theirs"),  # a task the worker has, in a queue it skips
            JobSpec("t", queue_name="mine"),
        ]
    )
    # A worker whose lease ran out does not count.
    await sql(
        client,
        "insert into S._workers (id, hostname, pid, tasks, concurrency, lease, heartbeat_at)"
        " values ('gone', 'h', 1, '{ghost}', 1, '1 second', now() - interval '1 minute')",
    )
    release = asyncio.Event()

    async def t(payload: Any, job: RunningJob) -> None:
        await release.wait()

    async with Worker(client.pool, {"t": t}, schema=client.schema, queues=["mi*"]):
        rows = await client.unhandled_tasks()
        release.set()
    by_task = {r["task_identifier"]: r for r in rows}
    assert sorted(by_task) == ["ghost", "t"]
    assert (by_task["ghost"]["ready"], by_task["ghost"]["queue_names"]) == (2, [None, "a"])
    assert (by_task["t"]["ready"], by_task["t"]["queue_names"]) == (1, ["theirs"])


async def test_stop_ends_a_service_that_lost_its_cancellation(client: Client) -> None:
    """A cancellation can be swallowed (Python 3.11's wait_for, inside the connection pool, as
    its wait ends): the service goes on looping. Stopping must not wait for it forever."""
    swallowed: list[str] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append("once")

    async def t(payload: Any, job: RunningJob) -> None:
        return None

    worker = Worker(client.pool, {"t": t}, schema=client.schema)
    await worker.start()
    worker._spawn(stubborn(), "stubborn")
    await asyncio.wait_for(worker.stop(), 30)
    assert swallowed == ["once"]
