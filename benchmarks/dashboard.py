"""The dashboard's pages on a large database: how long each takes to render.

    uv run python benchmarks/dashboard.py [--jobs 1000000] [--runs 100000] [--repeat 5]

Fills a throwaway schema (on DATABASE_URL or the embedded PostgreSQL) with `--jobs` jobs over
20 queues and 50 tasks (most available, some failed, some finished) and `--runs` runs of one
job, then times GET of each page (server-side rendering, measured at the client on
127.0.0.1, the median of `--repeat`). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

import httpx
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from kongflow import embedded
from kongflow.api import BackgroundServer, create_app
from kongflow.dashboard import DashboardOptions
from kongflow.engine.models import JobSpec
from kongflow.service.service import JobsService

BATCH = 20_000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = embedded.resolve_database_url()
    schema = f"bench_{secrets.token_hex(4)}"
    jobs = JobsService(url, schema=schema)
    try:
        await jobs.open()
        env = await jobs.environments.ensure("bench", "bench")
        await fill(jobs, args.jobs, args.runs, env.id)
        async with (
            BackgroundServer(create_app(jobs, DashboardOptions())) as server,
            httpx.AsyncClient(base_url=f"{server.url}/dashboard", timeout=60) as http,
        ):
            figures = await measure(http, jobs, args.repeat)
    finally:
        await jobs.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')  # type: ignore[arg-type]
    table = Table(title=f"dashboard pages, {args.jobs:,} jobs and {args.runs:,} runs")
    table.add_column("page")
    table.add_column("median", justify="right")
    table.add_column("slowest", justify="right")
    for page, times in figures.items():
        table.add_row(
            page, f"{statistics.median(times) * 1000:.0f} ms", f"{max(times) * 1000:.0f} ms"
        )
    Console().print(table)


async def fill(jobs: JobsService, job_count: int, run_count: int, environment_id: str) -> None:
    client = jobs.client
    with Progress(transient=True) as progress:
        adding = progress.add_task("jobs", total=job_count)
        for start in range(0, job_count, BATCH):
            specs = [
                JobSpec(f"task-{n % 50}", {"n": n}, queue_name=f"queue-{n % 20}")
                for n in range(start, min(start + BATCH, job_count))
            ]
            await client.add_jobs_fast(specs)
            progress.update(adding, advance=len(specs))
    s = f'"{client.schema}"'
    async with client.pool.connection() as conn:
        # a share of them failed for good, and a share finished (moved to _finished_jobs)
        await conn.execute(
            f"update {s}._jobs set attempts = max_attempts, last_error = 'boom',"  # type: ignore[arg-type]
            " updated_at = now() where id % 50 = 0"
        )
        await conn.execute(
            f"with done as (delete from {s}._jobs where id % 10 = 1 returning *)"  # type: ignore[arg-type]
            f" insert into {s}._finished_jobs (id, queue_name, task_identifier, payload,"
            " priority, run_at, attempts, max_attempts, key, revision, flags, last_error,"
            " errors, state, finished_at, created_at, result)"
            " select id, null, task_identifier, payload, priority, run_at, attempts,"
            " max_attempts, key, revision, flags, last_error, errors, 'completed', now(),"
            " created_at, null from done"
        )
        await conn.execute(
            f"insert into {s}.endpoints (environment_id, slug, url) values (%s, 'bench',"  # type: ignore[arg-type]
            " 'http://127.0.0.1:1') returning id",
            (environment_id,),
        )
    async with client.pool.connection() as conn:
        cur = await conn.execute(f"select id, project_id from {s}.runtime_environments")  # type: ignore[arg-type]
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(
            f"insert into {s}.job_definitions (project_id, slug, title) values (%s, 'bench-job',"  # type: ignore[arg-type]
            " 'Bench') returning id",
            (row[1],),
        )
        job_row = await cur.fetchone()
        assert job_row is not None
        cur = await conn.execute(
            f"insert into {s}.job_versions (job_id, environment_id, endpoint_id, version,"  # type: ignore[arg-type]
            " event_names) select %s, %s, id, '1', array['bench'] from"
            f" {s}.endpoints returning id",
            (job_row[0], environment_id),
        )
        version = await cur.fetchone()
        assert version is not None
        await conn.execute(
            f"insert into {s}.event_records (id, environment_id, event_id, name)"  # type: ignore[arg-type]
            " select 'ev-' || n, %s, 'ev-' || n, 'bench' from generate_series(1, %s) n",
            (environment_id, run_count),
        )
        await conn.execute(
            f"insert into {s}.job_runs (job_id, version_id, environment_id, endpoint_id,"  # type: ignore[arg-type]
            " event_id, status, number, created_at)"
            " select %s, %s, %s, (select id from " + s + ".endpoints), 'ev-' || n,"
            " (array['SUCCESS', 'FAILURE', 'QUEUED'])[1 + n %% 3], n,"
            " now() - make_interval(secs => n) from generate_series(1, %s) n",
            (job_row[0], version[0], environment_id, run_count),
        )
        await conn.execute(f"analyze {s}._jobs")  # type: ignore[arg-type]
        await conn.execute(f"analyze {s}.job_runs")  # type: ignore[arg-type]


async def measure(
    http: httpx.AsyncClient, jobs: JobsService, repeat: int
) -> dict[str, list[float]]:
    s = f'"{jobs.client.schema}"'
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(f"select max(id) from {s}._jobs where attempts >= max_attempts")  # type: ignore[arg-type]
        failed = await cur.fetchone()
        cur = await conn.execute(f"select id from {s}.job_runs order by created_at desc limit 1")  # type: ignore[arg-type]
        run = await cur.fetchone()
    assert failed is not None and run is not None
    pages = {
        "overview": "/",
        "jobs, newest": "/jobs",
        "jobs, failed": "/jobs?state=failed",
        "jobs, one task and queue": "/jobs?task=task-7&queue=queue-7",
        "jobs, by key (none)": "/jobs?q=no-such-key",
        "a job": f"/jobs/{failed[0]}",
        "bulk confirm (failed)": "/jobs/bulk?state=failed&action=retry",
        "queues": "/queues",
        "runs, newest": "/runs",
        "runs, FAILURE": "/runs?status=FAILURE",
        "a run": f"/runs/{run[0]}",
        "jobs service": "/service",
    }
    figures: dict[str, list[float]] = {}
    for name, path in pages.items():
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = await http.get(path)
            times.append(time.perf_counter() - began)
            response.raise_for_status()
        figures[name] = times
    return figures


if __name__ == "__main__":
    asyncio.run(main())
