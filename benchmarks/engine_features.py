"""What a rate-limited queue and a workflow step cost per job, beside the same jobs without them.

    uv run python benchmarks/engine_features.py [--jobs 20000] [--repeat 3]

On DATABASE_URL (or the embedded PostgreSQL), each shape in a throwaway schema, one in-process
worker (concurrency 200) burning the jobs down:

- `queue`: jobs on a named queue whose concurrency limit never binds (the baseline);
- `queue + rate limit`: the same with a rate limit that never binds (1,000,000/s), so what is
  measured is the limit's bookkeeping, not waiting;
- `plain jobs` and `workflow steps`: independent jobs with no queue, enqueued with add_jobs,
  beside the same number of steps in workflows of 10-step chains (each step after the one
  before it), enqueued with add_workflow and released one by one as their dependencies settle.

Prints jobs/s and microseconds per job for enqueue and burn-down (the median of --repeat);
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from kongflow import Client, JobSpec, RunningJob, Worker, Workflow, embedded

CHAIN = 10


async def noop(payload: Any, job: RunningJob) -> None:
    return None


Enqueue = Callable[[Client, int], Awaitable[None]]


async def queued(client: Client, jobs: int) -> None:
    await client.set_queue_limits({"bench": 10_000})
    await client.add_jobs_fast(JobSpec("noop", queue_name="bench") for _ in range(jobs))


async def rate_limited(client: Client, jobs: int) -> None:
    await client.set_rate_limits({"bench": "1000000/s"})
    await queued(client, jobs)


async def plain(client: Client, jobs: int) -> None:
    await client.add_jobs_fast(JobSpec("noop") for _ in range(jobs))


async def workflows(client: Client, jobs: int) -> None:
    for _ in range(jobs // CHAIN):
        flow = Workflow()
        previous: list[str] = []
        for n in range(CHAIN):
            previous = [flow.step(f"s{n}", "noop", after=previous)]
        await client.add_workflow(flow)


async def measure(url: str, enqueue: Enqueue, jobs: int) -> tuple[float, float]:
    """(enqueue seconds, burn-down seconds) in a schema of its own."""
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        async with Client(url, schema=schema) as client:
            started = time.perf_counter()
            await enqueue(client, jobs)
            enqueued = time.perf_counter() - started
            started = time.perf_counter()
            async with Worker(
                client.pool, {"noop": noop}, schema=schema, concurrency=200, poll_interval=0.05
            ) as worker:
                await worker.drain()
            return enqueued, time.perf_counter() - started
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'drop schema if exists "{schema}" cascade')  # type: ignore[arg-type]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = embedded.resolve_database_url()
    console = Console()
    shapes: list[tuple[str, Enqueue]] = [
        ("queue", queued),
        ("queue + rate limit", rate_limited),
        ("plain jobs", plain),
        ("workflow steps (chains of 10)", workflows),
    ]
    table = Table(title=f"{args.jobs:,} jobs, median of {args.repeat}")
    for column in ("shape", "enqueue jobs/s", "enqueue µs/job", "burn-down jobs/s", "µs/job"):
        table.add_column(column, justify="left" if column == "shape" else "right")
    for name, enqueue in shapes:
        runs = []
        for n in range(args.repeat):
            console.print(f"{name}: run {n + 1}/{args.repeat}")
            runs.append(await measure(url, enqueue, args.jobs))
        put = statistics.median(r[0] for r in runs)
        burn = statistics.median(r[1] for r in runs)
        table.add_row(
            name,
            f"{args.jobs / put:,.0f}",
            f"{put / args.jobs * 1e6:,.0f}",
            f"{args.jobs / burn:,.0f}",
            f"{burn / args.jobs * 1e6:,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
