"""Worker throughput and latency, with workers as separate processes (`kongflow worker`).

    uv run python benchmarks/worker.py [--jobs 50000] [--processes 1 2] [--rate 200]

burn-down: N no-op jobs are committed in one transaction while idle workers wait; the clock runs
from that commit until the last job is finished. latency: jobs enqueued one per transaction at a
steady rate with an idle worker; each handler reports how long after the add_job call it
started. Uses DATABASE_URL or the embedded PostgreSQL, in a throwaway schema. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from kongflow import Client, JobSpec, embedded

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def worker_processes(
    url: str, schema: str, count: int, concurrency: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": schema}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kongflow",
                "worker",
                "--tasks",
                "benchmarks.noop_tasks",
                "--concurrency",
                str(concurrency),
                "--log-level",
                "WARNING",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


async def wait_registered(conn: psycopg.AsyncConnection[object], schema: str, n: int) -> None:
    while True:
        cur = await conn.execute(f'select count(*) from "{schema}"._workers')  # type: ignore[arg-type]
        row = await cur.fetchone()
        if row and row[0] >= n:
            return
        await asyncio.sleep(0.05)


async def burn_down(url: str, client: Client, jobs: int, processes: int, concurrency: int) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with worker_processes(url, client.schema, processes, concurrency):
            await wait_registered(conn, client.schema, processes)
            async with conn.transaction():
                await client.add_jobs((JobSpec("noop") for _ in range(jobs)), conn=conn)
            started = time.perf_counter()
            while True:
                cur = await conn.execute(
                    f'select exists (select 1 from "{client.schema}"._jobs)'  # type: ignore[arg-type]
                )
                row = await cur.fetchone()
                if row and not row[0]:
                    break
                await asyncio.sleep(0.01)
            return jobs / (time.perf_counter() - started)


async def latency(url: str, client: Client, rate: float, count: int) -> list[float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with worker_processes(url, client.schema, 1, 10):
            await wait_registered(conn, client.schema, 1)
            ids = []
            start = time.perf_counter()
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                job = await client.add_job("noop", {"t": time.time()}, conn=conn)
                ids.append(job.id)
            while True:
                cur = await conn.execute(
                    f'select result from "{client.schema}"._finished_jobs'  # type: ignore[arg-type]
                    " where id = any(%s)",
                    (ids,),
                )
                rows = await cur.fetchall()
                if len(rows) == count:
                    return sorted(float(r[0]) * 1000 for r in rows)
                await asyncio.sleep(0.1)


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--latency-jobs", type=int, default=2000)
    args = parser.parse_args()

    url = embedded.resolve_database_url()
    console = Console()
    table = Table(title=f"kongflow worker ({os.cpu_count()} cores)")
    table.add_column("shape")
    table.add_column("figure", justify="right")
    for processes in args.processes:
        async with fresh_client(url) as client:
            with console.status(f"burn-down of {args.jobs:,} jobs, {processes} process(es)"):
                rate = await burn_down(url, client, args.jobs, processes, args.concurrency)
        table.add_row(
            f"burn-down {args.jobs:,} no-op jobs, {processes} process(es)", f"{rate:,.0f} jobs/s"
        )
    async with fresh_client(url) as client:
        with console.status(f"latency at {args.rate:g} jobs/s"):
            values = await latency(url, client, args.rate, args.latency_jobs)
    table.add_row(
        f"enqueue-to-start at {args.rate:g} jobs/s ({args.latency_jobs:,} jobs)",
        " / ".join(f"p{p:g} {percentile(values, p / 100):.1f}" for p in (50, 95, 99))
        + f" ms (mean {statistics.fmean(values):.1f})",
    )
    console.print(table)


@asynccontextmanager
async def fresh_client(url: str) -> AsyncIterator[Client]:
    """A client on a new throwaway schema, dropped afterwards."""
    async with Client(url, schema=f"bench_{secrets.token_hex(4)}") as client:
        try:
            yield client
        finally:
            async with client.pool.connection() as conn:
                await conn.execute(f'drop schema "{client.schema}" cascade')  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
