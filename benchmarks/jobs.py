"""The jobs service end to end: TestJob submissions through the HTTP API, and runs executed
against a Python SDK endpoint until every one is terminal, for a job without io and for one of
three io.run_task steps (each step a task created and completed through the API).

    uv run python benchmarks/jobs.py [--runs 1000] [--clients 16] [--concurrency 20]
        [--job 'no io'] [--workers N] [--rate 100]

Everything runs on 127.0.0.1, on DATABASE_URL or the embedded PostgreSQL, in a throwaway
schema: the API under uvicorn in this process, and the service's worker too, or with
`--workers N` in N processes of `kongflow serve --no-api` (each with --concurrency slots);
the endpoint (benchmarks/endpoint.py) in its own process, the load generator in another.
Submissions/s counts accepted POST /api/v1/jobs/<job>/test requests; runs/s counts runs reaching
a terminal status, from the first submission; latency is each run's submission to SUCCESS, by
the database's clock. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from fastapi import FastAPI
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kongflow import embedded
from kongflow.api import BackgroundServer, create_app
from kongflow.service.network import NetworkPolicy
from kongflow.service.service import JobsOptions, JobsService

ENDPOINT_SCRIPT = Path(__file__).with_name("endpoint.py")
JOBS = {"no io": "bench-plain", "3 io tasks": "bench-steps"}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--concurrency", type=int, default=20, help="worker slots")
    parser.add_argument(
        "--alone", type=int, default=50, help="runs submitted one at a time, for latency"
    )
    parser.add_argument(
        "--rate", type=float, help="also submit --runs at this steady rate (runs/s) and report"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (0: in the API's process)"
    )
    parser.add_argument(
        "--job", choices=sorted(JOBS), action="append", help="only this job (repeatable)"
    )
    args = parser.parse_args()
    jobs_to_run = {label: JOBS[label] for label in args.job or JOBS}
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
        await (jobs.open() if args.workers else jobs.start())
        env = await jobs.environments.ensure("bench", "bench")
        async with (
            BackgroundServer(create_app(jobs)) as api_server,
            httpx.AsyncClient(
                base_url=api_server.url,
                headers={"Authorization": f"Bearer {env.api_key}"},
                timeout=60,
            ) as api,
        ):
            with (
                worker_processes(url, schema, args.workers, args.concurrency),
                endpoint_process(env.api_key, api_server.url) as endpoint_url,
            ):
                response = await api.post(
                    "/api/v1/endpoints", json={"name": "bench-app", "url": endpoint_url}
                )
                response.raise_for_status()
                figures = {}
                for label, job in jobs_to_run.items():
                    await until_indexed(api, job)
                    await idle(jobs)
                    alone = await one_at_a_time(jobs, api, job, args.alone)
                    figures[label] = await measure(jobs, api, job, args.runs, args.clients)
                    figures[label]["one run alone: to SUCCESS p50 / p95"] = alone
                    if args.rate:
                        await idle(jobs)
                        steady = await measure(jobs, api, job, args.runs, args.clients, args.rate)
                        figures[label][f"at {args.rate:g} runs/s: to SUCCESS p50 / p95 / p99"] = (
                            steady["submission to SUCCESS p50 / p95 / p99"]
                        )
    finally:
        await jobs.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')  # type: ignore[arg-type]
    floor = await http_floor(args.clients, args.runs)
    table = Table(title=f"jobs service, {args.runs} test runs per job")
    table.add_column("figure")
    for label in figures:
        table.add_column(label, justify="right")
    for name in next(iter(figures.values())):
        table.add_row(name, *(f[name] for f in figures.values()))
    Console().print(table)
    Console().print(
        f"The same load generator against a bare FastAPI route (no database): {floor} requests/s"
    )


@contextmanager
def worker_processes(url: str, schema: str, count: int, concurrency: int) -> Iterator[None]:
    """`count` processes of `kongflow serve --no-api` on the benchmark's schema."""
    env = os.environ | {
        "DATABASE_URL": url,
        "KONGFLOW_SCHEMA": schema,
        "KONGFLOW_ALLOW_NETWORKS": "127.0.0.0/8",
    }
    command = [sys.executable, "-m", "kongflow", "serve", "--no-api"]
    processes = [
        subprocess.Popen([*command, "--concurrency", str(concurrency)], env=env)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


async def idle(jobs: JobsService) -> None:
    """Until the queue has no job left to run (the warm-up's, indexing's)."""
    while True:
        async with jobs.client.pool.connection() as conn:
            cur = await conn.execute(
                f'select count(*) from "{jobs.client.schema}".jobs'  # type: ignore[arg-type]
                " where state in ('available', 'running')"
            )
            row = await cur.fetchone()
        if row is not None and row[0] == 0:
            return
        await asyncio.sleep(0.05)


@contextmanager
def endpoint_process(api_key: str, api_url: str) -> Iterator[str]:
    """benchmarks/endpoint.py serving, in its own process; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(ENDPOINT_SCRIPT), str(port)],
        env=os.environ | {"KONGFLOW_API_KEY": api_key, "KONGFLOW_API_URL": api_url},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark endpoint did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


async def measure(
    jobs: JobsService,
    api: httpx.AsyncClient,
    job: str,
    runs: int,
    clients: int,
    rate: float | None = None,
) -> dict[str, str]:
    """`runs` submissions as fast as `clients` connections go (or at a steady `rate`), until
    every run is terminal."""
    before = await terminal_runs(jobs, job)
    counted_before, _ = await run_latencies(jobs, job)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1) as pool, Progress(transient=True) as progress:
        finishing = progress.add_task(f"{job}: runs finished", total=runs)
        load = loop.run_in_executor(
            pool,
            submit_load,
            str(api.base_url),
            api.headers["Authorization"],
            job,
            runs,
            clients,
            rate,
        )
        finished = 0
        while finished < runs:
            await asyncio.sleep(0.1)
            if load.done():
                load.result()  # raises if submitting failed
            finished = await terminal_runs(jobs, job) - before
            progress.update(finishing, completed=finished)
        latencies, submitted_in = await load
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    succeeded, to_success = await run_latencies(jobs, job, after=counted_before)
    r = statistics.quantiles(to_success, n=100)
    return {
        "submissions/s": f"{runs / submitted_in:,.0f}",
        "submission latency p50 / p95": f"{q[49] * 1000:.1f} / {q[94] * 1000:.1f} ms",
        "runs completed/s": f"{runs / elapsed:,.0f}",
        "submission to SUCCESS p50 / p95 / p99": (
            f"{r[49] * 1000:.0f} / {r[94] * 1000:.0f} / {r[98] * 1000:.0f} ms"
        ),
        "runs SUCCESS": f"{succeeded:,} of {runs:,}",
        "all runs terminal after": f"{elapsed:.1f} s",
    }


async def http_floor(clients: int, requests: int) -> str:
    """What the same load generator gets from a bare FastAPI route on this machine (POST,
    JSON in and out, no database): the most submissions/s any API could answer here."""
    app = FastAPI()

    @app.post("/api/v1/jobs/{job}/test", status_code=202)
    async def accepted(job: str) -> dict[str, str]:
        return {"runId": "-", "eventId": "-", "status": "queued"}

    loop = asyncio.get_running_loop()
    async with BackgroundServer(app) as server:
        with ProcessPoolExecutor(1) as pool:
            _, seconds = await loop.run_in_executor(
                pool, submit_load, server.url, "Bearer -", "floor", requests, clients
            )
    return f"{requests / seconds:,.0f}"


async def one_at_a_time(jobs: JobsService, api: httpx.AsyncClient, job: str, runs: int) -> str:
    """Submission to SUCCESS of a run with nothing else going on: `runs` of them in turn."""
    seconds = []
    for _ in range(runs):
        response = await api.post(f"/api/v1/jobs/{job}/test", json={})
        response.raise_for_status()
        run_id = response.json()["runId"]
        while (elapsed := await run_duration(jobs, run_id)) is None:  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.005)
        seconds.append(elapsed)
    q = statistics.quantiles(seconds, n=20)
    return f"{q[9] * 1000:.0f} / {q[18] * 1000:.0f} ms"


async def run_duration(jobs: JobsService, run_id: str) -> float | None:
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            "select extract(epoch from completed_at - created_at)::float8"  # type: ignore[arg-type]
            f" from \"{jobs.client.schema}\".job_runs where id = %s and status = 'SUCCESS'",
            (run_id,),
        )
        row = await cur.fetchone()
    return float(row[0]) if row else None


def submit_load(
    base_url: str,
    authorization: str,
    job: str,
    runs: int,
    clients: int,
    rate: float | None = None,
) -> tuple[list[float], float]:
    """In its own process, so the load generator does not eat the server's CPU: `runs` TestJob
    requests from `clients` kept-alive connections (the i-th sent no sooner than i / `rate`
    seconds from the start, given a rate); their latencies and the total time. The
    requests are written as bytes made once and the answers read by their Content-Length: an
    HTTP client library costs more CPU per request than the API it would measure."""
    url = httpx.URL(base_url)
    request = (
        f"POST /api/v1/jobs/{job}/test HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: {authorization}\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}"
    ).encode()

    async def run() -> tuple[list[float], float]:
        latencies: list[float] = []
        todo = iter(range(runs))

        async def client() -> None:
            reader, writer = await asyncio.open_connection(url.host, url.port)
            try:
                for i in todo:
                    if rate is not None:
                        await asyncio.sleep(started + i / rate - time.perf_counter())
                    began = time.perf_counter()
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1]
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    body = await reader.readexactly(length)
                    if status != b"202":
                        raise RuntimeError(f"the API answered {status.decode()}: {body!r}")
                    latencies.append(time.perf_counter() - began)
            finally:
                writer.close()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, time.perf_counter() - started

    return asyncio.run(run())


async def until_indexed(api: httpx.AsyncClient, job: str) -> None:
    """Test the job once, as soon as indexing has registered it (a warm-up run)."""
    for _ in range(200):
        if (await api.post(f"/api/v1/jobs/{job}/test")).status_code == 202:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the benchmark endpoint's {job} was not indexed within 10 s")


async def terminal_runs(jobs: JobsService, job: str) -> int:
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select count(*) from "{jobs.client.schema}".job_runs r'  # type: ignore[arg-type]
            f' join "{jobs.client.schema}".job_definitions j on j.id = r.job_id'
            " where j.slug = %s and r.completed_at is not null",
            (job,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def run_latencies(jobs: JobsService, job: str, after: int = 0) -> tuple[int, list[float]]:
    """How many of the job's runs succeeded (leaving out the first `after`, in creation
    order), and each one's seconds from creation to SUCCESS."""
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            "select extract(epoch from r.completed_at - r.created_at)::float8"  # type: ignore[arg-type]
            f' from "{jobs.client.schema}".job_runs r'
            f' join "{jobs.client.schema}".job_definitions j on j.id = r.job_id'
            " where j.slug = %s and r.status = 'SUCCESS' order by r.created_at offset %s",
            (job, after),
        )
        rows = await cur.fetchall()
    return len(rows), [float(row[0]) for row in rows]


if __name__ == "__main__":
    asyncio.run(main())
