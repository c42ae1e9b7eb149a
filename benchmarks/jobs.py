"""The jobs service end to end: TestJob submissions through the HTTP API, and runs executed
against an SDK endpoint until every one is terminal.

    uv run python benchmarks/jobs.py [--runs 1000] [--clients 50] [--concurrency 20]

Everything runs on 127.0.0.1 in this process (API under uvicorn, a worker, the example
endpoint), on DATABASE_URL or the embedded PostgreSQL, in a throwaway schema. Submissions/s
counts accepted POST /api/v1/jobs/hello-world/test requests; runs/s counts runs reaching a
terminal status, from the first submission. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import httpx
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kongflow import embedded
from kongflow.api import BackgroundServer, create_app
from kongflow.sdk.example import example_endpoint
from kongflow.service.network import NetworkPolicy
from kongflow.service.service import JobsOptions, JobsService


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--concurrency", type=int, default=20, help="worker slots")
    args = parser.parse_args()
    url = embedded.resolve_database_url()
    schema = f"bench_{secrets.token_hex(4)}"
    jobs = JobsService(
        url,
        schema=schema,
        options=JobsOptions(network=NetworkPolicy.dev()),  # its endpoint is on 127.0.0.1
        concurrency=args.concurrency,
        poll_interval=0.2,
    )
    try:
        await jobs.start()
        env = await jobs.environments.ensure("bench", "bench")
        endpoint = example_endpoint(env.api_key)
        async with (
            BackgroundServer(endpoint.app) as endpoint_server,
            BackgroundServer(create_app(jobs)) as api_server,
            httpx.AsyncClient(
                base_url=api_server.url,
                headers={"Authorization": f"Bearer {env.api_key}"},
                timeout=60,
            ) as api,
        ):
            response = await api.post(
                "/api/v1/endpoints", json={"slug": endpoint.id, "url": endpoint_server.url}
            )
            response.raise_for_status()
            await until_indexed(api)
            assert jobs.queue.worker is not None
            await jobs.queue.worker.drain()
            figures = await measure(jobs, api, args.runs, args.clients)
    finally:
        await jobs.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')  # type: ignore[arg-type]
    table = Table(title=f"jobs service, {args.runs} test runs")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, value)
    Console().print(table)


async def measure(
    jobs: JobsService, api: httpx.AsyncClient, runs: int, clients: int
) -> dict[str, str]:
    before = await terminal_runs(jobs)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1) as pool, Progress(transient=True) as progress:
        finishing = progress.add_task("runs finished", total=runs)
        load = loop.run_in_executor(
            pool, submit_load, str(api.base_url), api.headers["Authorization"], runs, clients
        )
        finished = 0
        while finished < runs:
            await asyncio.sleep(0.1)
            if load.done():
                load.result()  # raises if submitting failed
            finished = await terminal_runs(jobs) - before
            progress.update(finishing, completed=finished)
        latencies, submitted_in = await load
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {
        "submissions/s": f"{runs / submitted_in:,.0f}",
        "submission latency p50 / p95 / p99": (
            f"{q[49] * 1000:.1f} / {q[94] * 1000:.1f} / {q[98] * 1000:.1f} ms"
        ),
        "runs completed/s": f"{runs / elapsed:,.0f}",
        "all runs terminal after": f"{elapsed:.1f} s",
    }


def submit_load(
    base_url: str, authorization: str, runs: int, clients: int
) -> tuple[list[float], float]:
    """In its own process, so the load generator does not eat the server's CPU: `runs` TestJob
    requests from `clients` concurrent connections; their latencies and the total time."""

    async def run() -> tuple[list[float], float]:
        latencies: list[float] = []
        todo = iter(range(runs))
        async with httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": authorization}, timeout=60
        ) as api:

            async def client() -> None:
                for _ in todo:
                    began = time.perf_counter()
                    response = await api.post("/api/v1/jobs/hello-world/test", json={})
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - began)

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return latencies, time.perf_counter() - started

    return asyncio.run(run())


async def until_indexed(api: httpx.AsyncClient) -> None:
    """Test the job once, as soon as indexing has registered it (a warm-up run)."""
    for _ in range(200):
        if (await api.post("/api/v1/jobs/hello-world/test")).status_code == 202:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the example endpoint was not indexed within 10 s")


async def terminal_runs(jobs: JobsService) -> int:
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select count(*) from "{jobs.client.schema}".job_runs'  # type: ignore[arg-type]
            " where completed_at is not null"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    asyncio.run(main())
