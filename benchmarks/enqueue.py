"""Enqueue throughput: one job per transaction (1 and 8 clients) and bulk add_jobs.

    uv run python benchmarks/enqueue.py [--single 5000] [--bulk 100000] [--chunk 10000]

Uses DATABASE_URL or the embedded PostgreSQL, in a throwaway schema. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import time

import psycopg
from rich.console import Console
from rich.table import Table

from kongflow import Client, JobSpec, embedded


async def single(client: Client, url: str, total: int, clients: int) -> float:
    per_client = total // clients

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for i in range(per_client):
                await client.add_job("bench", {"i": i}, conn=conn)

    started = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(clients)))
    return per_client * clients / (time.perf_counter() - started)


async def bulk(client: Client, total: int, chunk: int) -> float:
    started = time.perf_counter()
    for offset in range(0, total, chunk):
        await client.add_jobs(
            JobSpec("bench", {"i": i}) for i in range(offset, min(offset + chunk, total))
        )
    return total / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=5000, help="jobs for the 1-job/tx runs")
    parser.add_argument("--bulk", type=int, default=100_000, help="jobs for the bulk run")
    parser.add_argument("--chunk", type=int, default=10_000, help="jobs per add_jobs call")
    args = parser.parse_args()

    url = embedded.resolve_database_url()
    schema = f"bench_{secrets.token_hex(4)}"
    console = Console()
    table = Table(title=f"kongflow enqueue ({platform.node()}, {os.cpu_count()} cores)")
    table.add_column("shape")
    table.add_column("jobs", justify="right")
    table.add_column("jobs/s", justify="right")
    try:
        async with Client(url, schema=schema) as client:
            with console.status("1 client, 1 job per transaction"):
                table.add_row(
                    "single, 1 client",
                    f"{args.single:,}",
                    f"{await single(client, url, args.single, 1):,.0f}",
                )
            with console.status("8 clients, 1 job per transaction"):
                table.add_row(
                    "single, 8 clients",
                    f"{args.single:,}",
                    f"{await single(client, url, args.single, 8):,.0f}",
                )
            with console.status(f"bulk, {args.chunk:,} per call"):
                table.add_row(
                    f"bulk, {args.chunk:,}/call",
                    f"{args.bulk:,}",
                    f"{await bulk(client, args.bulk, args.chunk):,.0f}",
                )
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'drop schema if exists "{schema}" cascade')  # type: ignore[arg-type]
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
