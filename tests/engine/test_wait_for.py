"""Awaitable results: wait_for returns a job's result or raises why it has none, woken by the
settle's NOTIFY, from a process that did not enqueue the job and while a worker in another
process runs it; the sync client alike."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kongflow import (
    Client,
    JobCancelled,
    JobFailed,
    JobGone,
    JobSpec,
    PermanentFailure,
    RunningJob,
    SyncClient,
    WaitTimeout,
    Worker,
)
from kongflow.engine.maintenance import MaintenanceOptions

TASKS = textwrap.dedent(
    """
    import asyncio

    from kongflow import PermanentFailure

    async def double(payload, job):
        await asyncio.sleep(payload.get("sleep", 0))
        return {"doubled": payload["n"] * 2}

    async def refuse(payload, job):
        raise PermanentFailure("no card on file")

    tasks = {"double": double, "refuse": refuse}
    """
)

WAITER = textwrap.dedent(
    """
    import asyncio, json, os, sys

    from kongflow import Client, KongflowError

    async def main():
        async with Client(schema=os.environ["KONGFLOW_SCHEMA"]) as client:
            try:
                print(json.dumps({"result": await client.wait_for(int(sys.argv[1]), timeout=60)}))
            except KongflowError as exc:
                print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))

    asyncio.run(main())
    """
)


@pytest.fixture
def processes(database_url: str, schema: str, tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "wait_tasks.py").write_text(TASKS)
    (tmp_path / "waiter.py").write_text(WAITER)
    env = {**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def answer(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate(timeout=90)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_a_waiter_in_one_process_gets_the_result_a_worker_in_another_computed(
    client: Client, processes: Any
) -> None:
    ok = await client.add_job("double", {"n": 21, "sleep": 0.5})
    refused = await client.add_job("refuse", {}, max_attempts=5)
    waiters = [processes("waiter.py", str(job.id)) for job in (ok, refused)]
    await asyncio.sleep(1)  # the waiters wait before the worker starts
    worker = processes("-m", "kongflow", "worker", "--tasks", "wait_tasks", "--once")
    assert answer(waiters[0]) == {"result": {"doubled": 42}}
    failed = answer(waiters[1])
    assert failed["error"] == "JobFailed" and "no card on file" in failed["message"]
    worker.communicate(timeout=60)
    assert worker.returncode == 0


async def test_cancel_timeout_and_a_job_that_is_not_there(client: Client) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = await client.add_job("double", {"n": 1}, run_at=later)
    with pytest.raises(WaitTimeout, match=f"job {scheduled.id} did not settle within 0.3s"):
        await client.wait_for(scheduled, timeout=0.3)
    waiting = asyncio.create_task(client.wait_for(scheduled.id, timeout=30))
    await asyncio.sleep(0.3)
    await client.cancel_job(scheduled.id)
    with pytest.raises(JobCancelled):
        await waiting
    with pytest.raises(JobGone, match="no such job"):
        await client.wait_for(10**12)
    deleted = await client.add_job("double", {"n": 2}, run_at=later)
    waiting = asyncio.create_task(client.wait_for(deleted, timeout=30))
    await asyncio.sleep(0.3)
    await client.delete_jobs([deleted.id])
    with pytest.raises(JobGone, match="finished and was removed"):
        await waiting
    failed = await client.add_job("double", {"n": 3}, run_at=later)
    waiting = asyncio.create_task(client.wait_for(failed, timeout=30))
    await asyncio.sleep(0.3)
    await client.permanently_fail_jobs([failed.id], "given up")
    with pytest.raises(JobFailed, match="given up"):
        await waiting
    async with client.pool.connection() as conn:  # every wait cleaned up after itself
        cur = await conn.execute(f'select count(*) from "{client.schema}"._result_waits')
        assert await cur.fetchone() == (0,)


async def test_many_waits_share_one_listener_and_each_gets_its_own_result(
    client: Client,
) -> None:
    async def double(payload: dict[str, int], job: RunningJob) -> dict[str, int]:
        return {"doubled": payload["n"] * 2}

    jobs = await client.add_jobs(JobSpec("double", {"n": n}) for n in range(200))
    waits = [asyncio.create_task(client.wait_for(job, timeout=60)) for job in jobs]
    await asyncio.sleep(0.5)
    async with Worker(client.pool, {"double": double}, schema=client.schema, concurrency=50):
        results = await asyncio.gather(*waits)
    assert results == [{"doubled": n * 2} for n in range(200)]


async def test_a_completed_job_not_kept_is_a_clear_error(client: Client) -> None:
    async def noop(payload: Any, job: RunningJob) -> int:
        return 1

    job = await client.add_job("noop")
    waiting = asyncio.create_task(client.wait_for(job, timeout=30))
    await asyncio.sleep(0.3)
    keep_nothing = MaintenanceOptions(completed_retention=timedelta(0))
    async with Worker(
        client.pool, {"noop": noop}, schema=client.schema, maintenance=keep_nothing
    ) as worker:
        await worker.drain()
    with pytest.raises(JobGone, match="finished and was removed before its outcome"):
        await waiting


async def test_the_sync_client_waits_too(client: Client, database_url: str) -> None:
    async def slow(payload: Any, job: RunningJob) -> str:
        await asyncio.sleep(0.3)
        return "done"

    async def refuse(payload: Any, job: RunningJob) -> None:
        raise PermanentFailure("nope")

    ok, bad = await client.add_job("slow"), await client.add_job("refuse")
    outcomes: dict[str, Any] = {}

    def wait() -> None:
        with SyncClient(database_url, schema=client.schema) as sync:
            outcomes["ok"] = sync.wait_for(ok.id, timeout=30)
            try:
                sync.wait_for(bad, timeout=30)
            except JobFailed as exc:
                outcomes["bad"] = str(exc)
            try:
                sync.wait_for(10**12, timeout=1)
            except JobGone as exc:
                outcomes["gone"] = str(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    await asyncio.sleep(0.5)
    tasks = {"slow": slow, "refuse": refuse}
    async with Worker(client.pool, tasks, schema=client.schema) as worker:
        await worker.drain()
    await asyncio.to_thread(waiter.join, 30)
    assert outcomes["ok"] == "done" and "nope" in outcomes["bad"]
    assert "is not in the database" in outcomes["gone"]
