"""Benchmarks of the engine on any PostgreSQL, behind `kongflow bench`: enqueue (one job per
transaction from one and several clients, against the floor of a bare INSERT and COMMIT on one
connection, and pipelined; and bulk), burn-down (pre-enqueued no-op jobs worked
to completion by worker processes), steady state (jobs enqueued at a fixed rate, the delay from
enqueue to handler start), and an idle worker's memory and CPU.

Each shape runs in a throwaway schema, dropped afterwards. Workers are real `kongflow worker`
processes running the no-op task below, so the figures include everything a deployment pays.
Figures are printed, never asserted: they move with the machine."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from kongflow.engine.client import Client
from kongflow.engine.models import JobSpec
from kongflow.engine.statements import Statements
from kongflow.engine.tasks import RunningJob

Progress = Callable[[int, int], None]
"""Told (done, total) as a shape advances."""


async def noop(payload: Any, job: RunningJob) -> float | None:
    """The benchmark task: returns seconds since payload["t"] (the enqueuer's clock), if set."""
    sent = payload.get("t") if isinstance(payload, dict) else None
    return time.time() - sent if sent is not None else None


tasks = {"noop": noop}


@dataclass(frozen=True)
class Figure:
    shape: str
    setting: str
    value: float
    unit: str
    detail: dict[str, float] | None = None


# -- enqueue ---------------------------------------------------------------------------------


async def enqueue_single(url: str, jobs: int, clients: int, progress: Progress) -> Figure:
    """`jobs` add_job calls, one job per transaction, spread over `clients` connections."""
    async with scratch_client(url) as client:
        done = 0

        async def run(count: int) -> None:
            nonlocal done
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for i in range(count):
                    await client.add_job("noop", {"i": i}, conn=conn)
                    done += 1
                    if done % 100 == 0:
                        progress(done, jobs)

        per_client = jobs // clients
        started = time.perf_counter()
        await asyncio.gather(*(run(per_client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    rate = per_client * clients / elapsed
    return Figure("enqueue", f"1 job/tx, {clients} client(s)", rate, "jobs/s")


async def enqueue_floor(url: str, jobs: int, progress: Progress) -> Figure:
    """What one client's add_job is bounded by: a bare INSERT of the same payload into a table
    of its own, each its own transaction, on one connection (one round trip and a commit)."""
    async with (
        scratch_client(url) as client,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        table = f'"{client.schema}".floor'
        await conn.execute(
            f"create table {table} (id bigint generated always as identity primary key,"
            " payload jsonb not null)"
        )
        insert = f"insert into {table} (payload) values (%s)"
        started = time.perf_counter()
        for i in range(jobs):
            await conn.execute(insert, (Jsonb({"i": i}),))
            if (i + 1) % 100 == 0:
                progress(i + 1, jobs)
        elapsed = time.perf_counter() - started
    return Figure("enqueue", "floor: bare INSERT + COMMIT, 1 client", jobs / elapsed, "jobs/s")


async def enqueue_pipelined(url: str, jobs: int, progress: Progress) -> Figure:
    """add_job from one connection in pipeline mode: each job still its own transaction
    (BEGIN, add_job, COMMIT), but sent without waiting for the one before (100 in flight)."""
    async with (
        scratch_client(url) as client,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        statements = Statements(client.schema)
        started = time.perf_counter()
        async with conn.pipeline() as pipeline:
            for i in range(jobs):
                params = statements.add_job_params(
                    "noop", {"i": i}, None, None, None, None, "replace", None, None, None
                )
                await conn.execute("begin")
                await conn.execute(statements.sql.add_job, params)
                await conn.execute("commit")
                if (i + 1) % 100 == 0:
                    await pipeline.sync()
                    progress(i + 1, jobs)
        elapsed = time.perf_counter() - started
        added = await _count(client, "select count(*) from {s}._jobs")
    if added != jobs:
        raise RuntimeError(f"the pipelined enqueue added {added} jobs of {jobs}")
    return Figure("enqueue", "1 job/tx pipelined, 1 client", jobs / elapsed, "jobs/s")


async def enqueue_bulk(url: str, jobs: int, chunk: int, progress: Progress) -> Figure:
    """`jobs` jobs through add_jobs_fast, `chunk` a call."""
    async with scratch_client(url) as client:
        started = time.perf_counter()
        for offset in range(0, jobs, chunk):
            count = min(chunk, jobs - offset)
            await client.add_jobs_fast(JobSpec("noop", {"i": offset + i}) for i in range(count))
            progress(offset + count, jobs)
        elapsed = time.perf_counter() - started
    return Figure("enqueue", f"bulk, {chunk:,}/call", jobs / elapsed, "jobs/s")


# -- workers ---------------------------------------------------------------------------------


async def burn_down(
    url: str, jobs: int, processes: int, concurrency: int, progress: Progress
) -> Figure:
    """Idle workers, then `jobs` no-op jobs committed at once; the clock runs from that commit
    until no job is left."""
    async with scratch_client(url) as client, _workers(url, client, processes, concurrency):
        await client.add_jobs_fast(JobSpec("noop", {"i": i}) for i in range(jobs))
        started = time.perf_counter()
        while (left := await _count(client, "select count(*) from {s}._jobs")) > 0:
            progress(jobs - left, jobs)
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    progress(jobs, jobs)
    return Figure(
        "burn-down",
        f"{jobs:,} no-op jobs, {processes} process(es) x {concurrency}",
        jobs / elapsed,
        "jobs/s",
    )


async def steady(
    url: str, rate: float, seconds: float, concurrency: int, progress: Progress
) -> Figure:
    """Jobs enqueued one per transaction at `rate` per second for `seconds`, worked by one idle
    worker process; the figure is the delay from before add_job to the handler's start."""
    total = max(1, int(rate * seconds))
    async with (
        scratch_client(url) as client,
        _workers(url, client, 1, concurrency),
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        began = time.perf_counter()
        for i in range(total):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            await client.add_job("noop", {"t": time.time()}, conn=conn)
            if i % 10 == 0:
                progress(i, total)
        query = "select result from {s}._finished_jobs where result is not null"
        while (done := await _count(client, "select count(*) from {s}._finished_jobs")) < total:
            progress(done, total)
            await asyncio.sleep(0.05)
        async with client.pool.connection() as own:
            cur = await own.execute(query.format(s=f'"{client.schema}"'))
            delays = sorted(float(row[0]) * 1000 for row in await cur.fetchall())
    progress(total, total)
    q = statistics.quantiles(delays, n=100, method="inclusive")
    return Figure(
        "steady",
        f"{rate:g} jobs/s for {seconds:g} s",
        q[94],
        "ms p95",
        {"p50": q[49], "p95": q[94], "p99": q[98], "max": delays[-1]},
    )


async def idle_worker(url: str, seconds: float, progress: Progress) -> Figure:
    """One worker process with nothing to do: its memory, and its CPU over `seconds`."""
    async with (
        scratch_client(url) as client,
        _workers(url, client, 1, 10) as (process,),
    ):
        await asyncio.sleep(2)  # past start-up
        cpu_before, began = _cpu_seconds(process.pid), time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            progress(int(elapsed), int(seconds))
            await asyncio.sleep(0.5)
        cpu = (_cpu_seconds(process.pid) - cpu_before) / elapsed
        rss = _rss_megabytes(process.pid)
    progress(int(seconds), int(seconds))
    return Figure("idle worker", f"over {seconds:g} s", rss, "MB RSS", {"cpu_percent": cpu * 100})


# -- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def scratch_client(url: str) -> AsyncIterator[Client]:
    """A client on a new throwaway schema, dropped afterwards."""
    async with Client(url, schema=f"bench_{secrets.token_hex(4)}") as client:
        try:
            yield client
        finally:
            async with client.pool.connection() as conn:
                await conn.execute(f'drop schema "{client.schema}" cascade')


@asynccontextmanager
async def _workers(
    url: str, client: Client, count: int, concurrency: int
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """`count` idle `kongflow worker` processes on the client's schema, registered."""
    with _worker_processes(url, client.schema, count, concurrency) as processes:
        while await _count(client, "select count(*) from {s}._workers") < count:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker process exited with {process.returncode}")
            await asyncio.sleep(0.05)
        yield processes


@contextmanager
def _worker_processes(
    url: str, schema: str, count: int, concurrency: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": schema}
    command = [
        sys.executable,
        "-m",
        "kongflow",
        "worker",
        "--tasks",
        "kongflow.engine.benchmark:tasks",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "WARNING",
    ]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _count(client: Client, query: str) -> int:
    async with client.pool.connection() as conn:
        cur = await conn.execute(query.format(s=f'"{client.schema}"'))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
