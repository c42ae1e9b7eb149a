"""The worker in-process: handlers, order, retries, snooze, timeouts, cancel, flags, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from kongflow import (
    Client,
    FixedBackoff,
    JobSpec,
    PermanentFailure,
    RunningJob,
    Snooze,
    Task,
    Worker,
    WorkerHooks,
)
from tests.support.helpers import count_jobs, wait_for_state


def make_worker(client: Client, tasks: dict[str, Any], **options: Any) -> Worker:
    options.setdefault("poll_interval", 0.2)
    return Worker(client.pool, tasks, schema=client.schema, **options)


async def test_async_and_sync_handlers_run_and_their_results_are_kept(client: Client) -> None:
    threads: list[str] = []

    async def double(payload: dict[str, int], job: RunningJob) -> int:
        return payload["n"] * 2

    def shout(payload: dict[str, str], job: RunningJob) -> str:
        threads.append(threading.current_thread().name)
        return payload["s"].upper()

    a = await client.add_job("double", {"n": 21})
    b = await client.add_job("shout", {"s": "hi"})
    async with make_worker(client, {"double": double, "shout": shout}) as worker:
        await worker.drain()
    done_a, done_b = await client.get_job(a.id), await client.get_job(b.id)
    assert done_a is not None and (done_a.state, done_a.result) == ("completed", 42)
    assert done_b is not None and (done_b.state, done_b.result) == ("completed", "HI")
    assert done_a.attempts == 1
    assert threads and threads[0].startswith("kongflow-job")


async def test_priority_then_run_at_order(client: Client) -> None:
    seen: list[str] = []

    async def record(payload: dict[str, str], job: RunningJob) -> None:
        seen.append(payload["name"])

    now = datetime.now(UTC)
    await client.add_job("rec", {"name": "low-old"}, priority=5, run_at=now - timedelta(hours=2))
    await client.add_job("rec", {"name": "high-new"}, priority=-1, run_at=now - timedelta(hours=1))
    await client.add_job("rec", {"name": "mid-new"}, run_at=now - timedelta(minutes=1))
    await client.add_job("rec", {"name": "mid-old"}, run_at=now - timedelta(minutes=2))
    await client.add_job("rec", {"name": "future"}, run_at=now + timedelta(hours=1))
    async with make_worker(client, {"rec": record}, concurrency=1) as worker:
        await worker.drain()
    assert seen == ["high-new", "mid-old", "mid-new", "low-old"]
    assert await count_jobs(client, "state = 'scheduled'") == 1


async def test_only_registered_tasks_are_claimed(client: Client) -> None:
    async def noop(payload: Any, job: RunningJob) -> None:
        return None

    other = await client.add_job("someone_elses_task")
    async with make_worker(client, {"noop": noop}) as worker:
        await client.add_job("noop")
        await worker.drain()
    job = await client.get_job(other.id)
    assert job is not None and job.state == "available"


async def test_failures_retry_with_the_task_backoff_until_max_attempts(client: Client) -> None:
    calls: list[float] = []

    async def flaky(payload: Any, job: RunningJob) -> None:
        calls.append(time.monotonic())
        raise ValueError(f"attempt {job.attempts} failed")

    job = await client.add_job("flaky", max_attempts=3)
    async with make_worker(
        client, {"flaky": Task(flaky, retry=FixedBackoff(0.3))}, poll_interval=0.05
    ) as worker:
        failed = await wait_for_state(client, job.id, "failed")
        await worker.drain()
    assert len(calls) == 3
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(calls))
    assert failed.attempts == 3
    assert failed.last_error == "ValueError: attempt 3 failed"
    assert [e["attempt"] for e in failed.errors] == [1, 2, 3]
    assert all(e["type"] == "ValueError" for e in failed.errors)
    assert "Traceback" in failed.errors[0]["traceback"]


async def test_default_backoff_is_exp_of_attempts(client: Client) -> None:
    async def boom(payload: Any, job: RunningJob) -> None:
        raise RuntimeError("boom")

    job = await client.add_job("boom")
    async with make_worker(client, {"boom": boom}) as worker:
        await worker.drain()
    retrying = await client.get_job(job.id)
    assert retrying is not None
    assert (retrying.state, retrying.attempts) == ("scheduled", 1)
    failed_at = datetime.fromisoformat(retrying.errors[-1]["at"])
    delay = (retrying.run_at - failed_at).total_seconds()
    assert 2.5 < delay < 3.0  # e ** 1


async def test_snooze_retries_later_without_spending_an_attempt(client: Client) -> None:
    calls = 0

    async def sleepy(payload: Any, job: RunningJob) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Snooze(0.1)
        return "awake"

    job = await client.add_job("sleepy", max_attempts=1)
    async with make_worker(client, {"sleepy": sleepy}, poll_interval=0.05):
        done = await wait_for_state(client, job.id, "completed")
    assert calls == 3
    assert done.attempts == 1
    assert done.errors == []


async def test_permanent_failure_stops_retries_at_once(client: Client) -> None:
    async def refuse(payload: Any, job: RunningJob) -> None:
        raise PermanentFailure("bad input")

    job = await client.add_job("refuse", max_attempts=10)
    async with make_worker(client, {"refuse": refuse}) as worker:
        await worker.drain()
    failed = await client.get_job(job.id)
    assert failed is not None
    assert (failed.state, failed.attempts) == ("failed", 10)
    assert failed.last_error == "PermanentFailure: bad input"


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_timeout_fails_the_attempt(client: Client, kind: str) -> None:
    async def slow_async(payload: Any, job: RunningJob) -> None:
        await asyncio.sleep(30)

    def slow_sync(payload: Any, job: RunningJob) -> None:
        job.cancelled.wait(30)  # cooperative: returns when the worker gives up on it

    handler = slow_async if kind == "async" else slow_sync
    job = await client.add_job("slow", max_attempts=1)
    started = time.monotonic()
    async with make_worker(client, {"slow": Task(handler, timeout=0.3)}) as worker:
        failed = await wait_for_state(client, job.id, "failed")
        await worker.drain()
    assert time.monotonic() - started < 10
    assert failed.last_error == "JobTimeout: job timed out after 0.3s"


async def test_cancel_a_running_job_stops_its_handler_promptly(client: Client) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def forever(payload: Any, job: RunningJob) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped.append("cancelled")
            raise

    hooks = RecordingHooks()
    job = await client.add_job("forever", max_attempts=5)
    async with make_worker(client, {"forever": forever}, hooks=[hooks]):
        await asyncio.wait_for(started.wait(), 5)
        t0 = time.monotonic()
        await client.cancel_job(job.id)
        cancelled = await wait_for_state(client, job.id, "cancelled")
        assert time.monotonic() - t0 < 2
    assert stopped == ["cancelled"]
    assert cancelled.attempts == 5  # it will never be retried
    assert hooks.events.count("cancelled") == 1


async def test_cancel_reaches_a_sync_handler_through_its_event(client: Client) -> None:
    def cooperative(payload: Any, job: RunningJob) -> None:
        if not job.cancelled.wait(30):
            raise AssertionError("never cancelled")

    job = await client.add_job("coop")
    async with make_worker(client, {"coop": cooperative}, poll_only=True, heartbeat_interval=0.1):
        await wait_for_state(client, job.id, "running")
        await client.cancel_job(job.id)
        await wait_for_state(client, job.id, "cancelled")


@pytest.mark.parametrize("style", ["list", "sync", "async"])
async def test_forbidden_flags(client: Client, style: str) -> None:
    ran: list[int] = []

    async def rec(payload: dict[str, int], job: RunningJob) -> None:
        ran.append(payload["n"])

    def sync_flags() -> list[str]:
        return ["blocked"]

    async def async_flags() -> list[str]:
        return ["blocked"]

    forbidden: Any = {"list": ["blocked"], "sync": sync_flags, "async": async_flags}[style]
    await client.add_job("rec", {"n": 1}, flags=["blocked"])
    await client.add_job("rec", {"n": 2}, flags=["other"])
    await client.add_job("rec", {"n": 3})
    async with make_worker(client, {"rec": rec}, forbidden_flags=forbidden) as worker:
        await worker.drain()
    assert sorted(ran) == [2, 3]


async def test_paused_queue_waits_until_resumed(client: Client) -> None:
    ran: list[str] = []

    async def rec(payload: Any, job: RunningJob) -> None:
        ran.append(job.queue_name or "")

    await client.pause_queue("mail")
    await client.add_job("rec", queue_name="mail")
    await client.add_job("rec", queue_name="other")
    async with make_worker(client, {"rec": rec}) as worker:
        await worker.drain()
        assert ran == ["other"]
        await client.resume_queue("mail")
        await worker.drain()
    assert ran == ["other", "mail"]


async def test_worker_serves_only_its_queues(client: Client) -> None:
    ran: list[str | None] = []

    async def rec(payload: Any, job: RunningJob) -> None:
        ran.append(job.queue_name)

    for queue in ("runs:1", "runs:2", "email", None):
        await client.add_job("rec", queue_name=queue)
    async with make_worker(client, {"rec": rec}, queues=["runs:*"]) as worker:
        await worker.drain()
    assert sorted(ran) == ["runs:1", "runs:2"]  # type: ignore[type-var]


async def test_graceful_shutdown_gives_running_jobs_back_with_their_attempt(
    client: Client,
) -> None:
    started = asyncio.Event()

    async def long(payload: Any, job: RunningJob) -> None:
        started.set()
        await asyncio.sleep(60)

    quick_done: list[int] = []

    async def quick(payload: Any, job: RunningJob) -> None:
        await asyncio.sleep(0.2)
        quick_done.append(job.id)

    job = await client.add_job("long")
    q = await client.add_job("quick")
    worker = make_worker(client, {"long": long, "quick": quick})
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(timeout=1.0)
    back = await client.get_job(job.id)
    assert back is not None
    assert (back.state, back.attempts, back.locked_by) == ("available", 0, None)
    assert quick_done == [q.id]  # finished within the timeout
    done = await client.get_job(q.id)
    assert done is not None and done.state == "completed"


class RecordingHooks(WorkerHooks):
    def __init__(self) -> None:
        self.events: list[str] = []

    def job_started(self, job: RunningJob) -> None:
        self.events.append("started")

    def job_completed(self, job: RunningJob, duration: float) -> None:
        self.events.append("completed")

    def job_retried(self, job: RunningJob, error: BaseException, retry_at: datetime) -> None:
        self.events.append("retried")

    def job_failed(self, job: RunningJob, error: BaseException) -> None:
        self.events.append("failed")

    def job_cancelled(self, job: RunningJob) -> None:
        self.events.append("cancelled")

    def jobs_rescued(self, job_ids: Any) -> None:
        self.events.append(f"rescued:{len(job_ids)}")


async def test_hooks_see_each_event(client: Client) -> None:
    async def ok(payload: Any, job: RunningJob) -> None:
        return None

    async def bad(payload: Any, job: RunningJob) -> None:
        raise ValueError("no")

    hooks = RecordingHooks()
    await client.add_job("ok")
    await client.add_job("bad", max_attempts=2)
    async with make_worker(
        client,
        {"ok": ok, "bad": Task(bad, retry=FixedBackoff(0))},
        hooks=[hooks],
        poll_interval=0.05,
    ) as worker:
        await worker.drain()
    assert sorted(hooks.events) == sorted(
        ["started", "completed", "started", "retried", "started", "failed"]
    )


async def test_a_lost_workers_late_result_is_rejected(client: Client) -> None:
    release = threading.Event()
    calls: list[str] = []

    def stuck(payload: Any, job: RunningJob) -> str:
        calls.append("a")
        release.wait(30)
        return "late"

    async def fast(payload: Any, job: RunningJob) -> str:
        calls.append("b")
        return "on time"

    job = await client.add_job("job")
    a = make_worker(client, {"job": stuck}, heartbeat_interval=0.1, concurrency=1)
    await a.start()
    try:
        await wait_for_state(client, job.id, "running")
        lost_id = a.id
        released = await client.force_unlock_workers([lost_id])
        assert released == [job.id]
        rescued = await client.get_job(job.id)
        assert rescued is not None
        assert rescued.errors[-1]["type"] == "WorkerLost"
        assert rescued.state == "available"  # at once: no backoff for a lost attempt
        async with make_worker(client, {"job": fast}) as b:
            done = await wait_for_state(client, job.id, "completed")
            await b.drain()
        release.set()  # the lost worker finishes now: too late
        await a.drain()  # writes the late result, which the database refuses
        assert a.rejected_results == 1
        async with client.pool.connection() as conn:  # it noticed and registered again
            cur = await conn.execute(
                f'select count(*) from "{client.schema}"._workers where id = %s',  # type: ignore[arg-type]
                (lost_id,),
            )
            assert await cur.fetchone() == (1,)
        final = await client.get_job(job.id)
        assert final is not None
        assert (final.state, final.result) == ("completed", "on time") == (done.state, done.result)
        assert calls == ["a", "b"]
    finally:
        release.set()
        await a.stop(timeout=1)


async def test_pipelined_claims_of_one_worker_keep_queue_limits_and_slots(client: Client) -> None:
    """A backlog makes the worker keep two claims in flight: neither may break a queue's limit
    or the worker's own slot count."""
    running: dict[str, int] = {"serial": 0, "limited": 0, "none": 0, "all": 0}
    peaks = dict(running)

    async def work(payload: dict[str, str], job: RunningJob) -> None:
        for name in (payload["q"], "all"):
            running[name] += 1
            peaks[name] = max(peaks[name], running[name])
        await asyncio.sleep(0.002)
        for name in (payload["q"], "all"):
            running[name] -= 1

    await client.add_jobs(
        [JobSpec("work", {"q": "serial"}, queue_name="serial") for _ in range(60)]
        + [JobSpec("work", {"q": "limited"}, queue_name="limited") for _ in range(60)]
        + [JobSpec("work", {"q": "none"}) for _ in range(400)]
    )
    worker = make_worker(client, {"work": work}, concurrency=40, queue_limits={"limited": 3})
    async with worker:
        await worker.drain()
    assert (peaks["serial"], peaks["limited"]) == (1, 3)
    assert 3 < peaks["all"] <= 40
    assert await count_jobs(client) == 0


async def test_a_wake_up_during_a_claim_is_not_lost(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose NOTIFY arrives while a claim is in flight (that claim did not see it) is
    claimed once that claim ends, not at the next poll, a minute away."""
    in_claim, release = asyncio.Event(), asyncio.Event()
    holding = False
    ran = asyncio.Event()

    async def work(payload: Any, job: RunningJob) -> None:
        ran.set()

    worker = Worker(client.pool, {"work": work}, schema=client.schema, poll_interval=60)
    async with worker:
        producer = worker.producer
        assert producer is not None
        claim = producer._claim

        async def held_claim(limit: int) -> list[RunningJob]:
            jobs = await claim(limit)
            if holding and not jobs:  # an empty claim, held open while the job arrives
                in_claim.set()
                await release.wait()
            return jobs

        monkeypatch.setattr(producer, "_claim", held_claim)
        await asyncio.sleep(0.2)  # past the claims at start
        holding = True
        producer.wake()  # an empty claim begins, and is held
        await asyncio.wait_for(in_claim.wait(), 5)
        holding = False
        await client.add_job("work")
        await asyncio.sleep(0.3)  # its NOTIFY reaches the worker during the held claim
        release.set()
        await asyncio.wait_for(ran.wait(), 10)


async def test_claimed_jobs_read_times_in_utc_and_payloads_whatever_their_spacing(
    client: Client, database_url: str, aconn: Any
) -> None:
    """The worker's own connections read times in UTC (the same instants, whatever the server's
    zone), and payloads stored with any spacing decode like json.loads would."""
    seen: list[tuple[Any, timedelta | None]] = []

    async def record(payload: Any, job: RunningJob) -> None:
        seen.append((payload, job.run_at.utcoffset()))

    spaced = ' { "a" : [1, 2.5, "é"] } '
    await client.add_job("record", {"b": None})
    await aconn.execute(f'select "{client.schema}".add_job(%s, %s::json)', ("record", spaced))
    await aconn.commit()
    tokyo = make_conninfo(database_url, options="-c TimeZone=Asia/Tokyo")
    async with Worker(tokyo, {"record": record}, schema=client.schema, poll_interval=0.2) as w:
        await w.drain()
    assert sorted(seen, key=str) == sorted(
        [({"b": None}, timedelta(0)), ({"a": [1, 2.5, "é"]}, timedelta(0))], key=str
    )


async def test_a_result_of_none_is_stored_as_no_result(client: Client, aconn: Any) -> None:
    async def nothing(payload: Any, job: RunningJob) -> None:
        return None

    async def something(payload: Any, job: RunningJob) -> list[int]:
        return [1]

    a = await client.add_job("nothing")
    b = await client.add_job("something")
    async with make_worker(client, {"nothing": nothing, "something": something}) as worker:
        await worker.drain()
    cur = await aconn.execute(
        f'select id, state, result is null, result::text from "{client.schema}"._finished_jobs'
        " order by id"
    )
    assert await cur.fetchall() == [
        (a.id, "completed", True, None),
        (b.id, "completed", False, "[1]"),
    ]


def count_claims(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, one element per claim of the started `worker`."""
    producer = worker.producer
    assert producer is not None
    claim, claims = producer._claim, []

    async def counted(limit: int) -> list[RunningJob]:
        claims.append(limit)
        return await claim(limit)

    monkeypatch.setattr(producer, "_claim", counted)
    return claims


async def test_an_idle_worker_claims_once_per_new_job(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a backlog, a finished job or its written result is no reason to look for work:
    those claims were wasted, and one in flight delayed the claim a NOTIFY asked for."""
    done = asyncio.Event()

    async def work(payload: Any, job: RunningJob) -> None:
        done.set()

    worker = Worker(client.pool, {"work": work}, schema=client.schema, poll_interval=60)
    async with worker:
        await worker.drain()  # past the claims at start
        claims = count_claims(worker, monkeypatch)
        for _ in range(10):
            done.clear()
            await client.add_job("work")
            await asyncio.wait_for(done.wait(), 5)
            await asyncio.sleep(0.05)  # its result is written
        assert len(claims) <= 12  # one a job, and a little slack


async def test_a_serial_queue_runs_on_as_each_result_is_written_not_at_the_poll(
    client: Client,
) -> None:
    """Freeing a named queue's slot is the one change without a NOTIFY: the written result
    itself wakes the worker for the queue's next job."""
    order: list[int] = []

    async def work(payload: dict[str, int], job: RunningJob) -> None:
        order.append(payload["n"])

    await client.add_jobs([JobSpec("work", {"n": n}, queue_name="serial") for n in range(5)])
    worker = make_worker(client, {"work": work}, poll_interval=60)
    started = time.monotonic()
    async with worker:
        while len(order) < 5:
            assert time.monotonic() - started < 10, f"stalled after {order}"
            await asyncio.sleep(0.02)
    assert order == [0, 1, 2, 3, 4]


async def test_a_flag_allowed_again_when_a_job_ends_is_taken_then_not_at_the_poll(
    client: Client,
) -> None:
    """A forbidden_flags function may allow a job once another ends (a mutex per tenant): no
    NOTIFY says so, so such a worker looks for work after each of its results."""
    running: set[str] = set()
    ran: list[int] = []
    first_started = asyncio.Event()

    async def work(payload: dict[str, Any], job: RunningJob) -> None:
        running.add("tenant-a")
        first_started.set()
        await asyncio.sleep(0.2)
        ran.append(payload["n"])
        running.discard("tenant-a")

    await client.add_job("work", {"n": 1}, flags=["tenant-a"])
    worker = make_worker(
        client, {"work": work}, forbidden_flags=lambda: sorted(running), poll_interval=60
    )
    async with worker:
        await asyncio.wait_for(first_started.wait(), 5)
        await client.add_job("work", {"n": 2}, flags=["tenant-a"])  # forbidden for now
        started = time.monotonic()
        while len(ran) < 2:
            assert time.monotonic() - started < 5, f"waited for the poll: {ran}"
            await asyncio.sleep(0.02)


async def test_a_poll_only_worker_takes_follow_up_work_at_once(client: Client) -> None:
    """Without LISTEN, new work is found by looking after each result (or at the poll)."""
    ran: list[int] = []

    async def chain(payload: dict[str, int], job: RunningJob) -> None:
        ran.append(payload["n"])
        if payload["n"] < 3:
            await client.add_job("chain", {"n": payload["n"] + 1})

    await client.add_job("chain", {"n": 1})
    started = time.monotonic()
    async with make_worker(client, {"chain": chain}, poll_only=True, poll_interval=60):
        while len(ran) < 3:
            assert time.monotonic() - started < 5, f"waited for the poll: {ran}"
            await asyncio.sleep(0.02)
    assert ran == [1, 2, 3]


async def test_a_queue_slot_freed_by_another_worker_is_announced(client: Client) -> None:
    """Worker A runs only task `a`, worker B only task `b`; both jobs share a serial queue. When
    A's job ends, settling it announces the freed slot, so B starts its job at once."""
    release_a, b_ran = asyncio.Event(), asyncio.Event()

    async def a(payload: Any, job: RunningJob) -> None:
        await release_a.wait()

    async def b(payload: Any, job: RunningJob) -> None:
        b_ran.set()

    first = await client.add_job("a", queue_name="shared")
    async with make_worker(client, {"a": a}, poll_interval=60):
        await wait_for_state(client, first.id, "running")
        await client.add_job("b", queue_name="shared")
        async with make_worker(client, {"b": b}, poll_interval=60):
            await asyncio.sleep(0.2)  # B has looked, and found the queue busy
            assert not b_ran.is_set()
            release_a.set()
            await asyncio.wait_for(b_ran.wait(), 5)
