"""Crash recovery: how long the jobs of a SIGKILLed worker wait before they run again, with a
backlog queued behind them.

    uv run python benchmarks/rescue.py [--jobs 250] [--sleep 2] [--concurrency 10] [--lease 10]

Two `kongflow worker` processes (a victim and a survivor, `--concurrency` slots each) start on
a backlog of `--jobs` jobs that each sleep `--sleep` seconds. Once the victim holds a full set
of jobs it is SIGKILLed; the figure is, per orphan, the time from the kill to the start of its
next attempt (both read on the database clock). Runs on DATABASE_URL or the embedded
PostgreSQL, in a throwaway schema. Prints figures; asserts nothing.
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
from pathlib import Path
from typing import Any

import psycopg

from kongflow import Client, JobSpec, RunningJob, embedded

_connection: psycopg.AsyncConnection[Any] | None = None
_lock = asyncio.Lock()


async def sleeper(payload: dict[str, Any], job: RunningJob) -> None:
    """Records when this attempt started (database clock), then sleeps."""
    global _connection
    schema = os.environ["KONGFLOW_SCHEMA"]
    async with _lock:  # one connection per worker process is plenty
        if _connection is None or _connection.closed:
            _connection = await psycopg.AsyncConnection.connect(
                os.environ["DATABASE_URL"], autocommit=True
            )
        await _connection.execute(
            f'insert into "{schema}".rescue_log values (%s, %s, clock_timestamp())',  # type: ignore[arg-type]
            (job.id, job.attempts),
        )
    await asyncio.sleep(payload["sleep"])


tasks = {"sleeper": sleeper}


def start_worker(url: str, schema: str, concurrency: int, lease: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": schema}
    command = [
        sys.executable,
        "-m",
        "kongflow",
        "worker",
        "--tasks",
        "benchmarks.rescue:tasks",
        "--concurrency",
        str(concurrency),
        "--lease",
        str(lease),
        "--log-level",
        "WARNING",
    ]
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL)


def query(url: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()  # type: ignore[arg-type]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=250)
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds per job")
    parser.add_argument("--concurrency", type=int, default=10, help="slots per worker")
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    url = embedded.resolve_database_url()
    schema = f"bench_{secrets.token_hex(4)}"
    s = f'"{schema}"'
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with Client(url, schema=schema) as client:
            async with client.pool.connection() as conn:
                await conn.execute(
                    f"create table {s}.rescue_log"  # type: ignore[arg-type]
                    " (job_id bigint, attempt int, started_at timestamptz)"
                )
            await client.add_jobs_fast(
                JobSpec("sleeper", {"sleep": args.sleep}) for _ in range(args.jobs)
            )
        victim = start_worker(url, schema, args.concurrency, args.lease)
        procs.append(victim)
        deadline = time.monotonic() + 60
        pattern = f"%:{victim.pid}:%"
        while True:
            held = query(url, f"select count(*) from {s}._jobs where locked_by like %s", (pattern,))
            if held[0][0] >= args.concurrency:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the victim never filled its slots")
            await asyncio.sleep(0.05)
        procs.append(start_worker(url, schema, args.concurrency, args.lease))
        await asyncio.sleep(max(args.sleep, 1.0))  # the survivor is busy too
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        (killed_at,) = query(url, "select clock_timestamp()")[0]
        orphans = [
            row[0]
            for row in query(url, f"select id from {s}._jobs where locked_by like %s", (pattern,))
        ]
        backlog = query(url, f"select count(*) from {s}._jobs where locked_at is null")[0][0]
        print(f"killed the victim holding {len(orphans)} job(s), {backlog} queued behind them")
        deadline = time.monotonic() + args.timeout
        while True:
            restarts = query(
                url,
                f"select job_id, min(started_at) from {s}.rescue_log"
                " where job_id = any(%s) and attempt >= 2 group by job_id",
                (orphans,),
            )
            if len(restarts) == len(orphans):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(restarts)} of {len(orphans)} orphans ran again")
            await asyncio.sleep(0.2)
        delays = sorted((started - killed_at).total_seconds() for _, started in restarts)
        print(
            f"kill -> orphan restart (s): min {delays[0]:.1f}  median"
            f" {statistics.median(delays):.1f}  max {delays[-1]:.1f}"
            f"  (lease {args.lease:g}s, {args.jobs} jobs of {args.sleep:g}s,"
            f" {args.concurrency} slots per worker)"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop schema if exists {s} cascade")  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
