"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import psycopg

from kongflow import Client, Job


async def mark_running(client: Client, job_id: int, worker: str = "test-worker") -> None:
    """Puts a job in the state a worker's claim leaves it in (locked, attempt counted)."""
    async with client.pool.connection() as conn:
        await conn.execute(
            f'update "{client.schema}"._jobs set locked_at = now(), locked_by = %s,'  # type: ignore[arg-type]
            " attempts = attempts + 1 where id = %s",
            (worker, job_id),
        )


async def count_jobs(client: Client, where: str = "true") -> int:
    async with client.pool.connection() as conn:
        cur = await conn.execute(f'select count(*) from "{client.schema}".jobs where {where}')  # type: ignore[arg-type]
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def wait_for_state(client: Client, job_id: int, state: str, timeout: float = 10.0) -> Job:
    """Polls until the job reaches `state`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await client.get_job(job_id)
        if job is not None and job.state == state:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} is {job and job.state}, not {state}: {job}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_schema(client: Client, text: str) -> Any:
    """SQL written with `S.` for the client's schema, e.g. `select * from S._jobs`."""
    return text.replace("S.", f'"{client.schema}".')


async def sql(client: Client, text: str, params: Any = None) -> list[Any]:
    """Run SQL written with `S.` for the client's schema; its rows, if it returns any."""
    async with client.pool.connection() as conn:
        cur = await conn.execute(in_schema(client, text), params)
        return await cur.fetchall() if cur.description else []


def rows_of(database_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A query on a connection of its own (outside any pool under test): what checks read."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


async def eventually(predicate: Any, timeout: float, what: str) -> None:
    """Wait until the blocking `predicate()` holds (checked in a thread, every 0.1 s)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
