"""Handlers for worker processes started by the tests (`kongflow worker --tasks
tests.support.worker_tasks`). Each run is written to the test schema's run_log, timed by the
database clock (and with the time it was claimed), so tests can check what ran where and when,
across processes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg

from kongflow import RunningJob

_DDL = (
    "create table if not exists {schema}.run_log ("
    " job_id bigint, queue_name text, pid int, attempt int,"
    " started_at timestamptz, finished_at timestamptz, locked_at timestamptz)"
)


def create_run_log(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(_DDL.format(schema=f'"{schema}"'))  # type: ignore[arg-type]


async def record(payload: dict[str, Any], job: RunningJob) -> None:
    """Sleeps payload["sleep"] seconds between two readings of the database clock."""
    schema = os.environ["KONGFLOW_SCHEMA"]
    async with await psycopg.AsyncConnection.connect(
        os.environ["DATABASE_URL"], autocommit=True
    ) as conn:
        cur = await conn.execute("select clock_timestamp()")
        row = await cur.fetchone()
        assert row is not None
        await asyncio.sleep(payload.get("sleep", 0))
        await conn.execute(
            f'insert into "{schema}".run_log values (%s, %s, %s, %s, %s, clock_timestamp(), %s)',  # type: ignore[arg-type]
            (job.id, job.queue_name, os.getpid(), job.attempts, row[0], job.locked_at),
        )


tasks = {"record": record}
