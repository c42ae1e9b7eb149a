"""The SQL API: any driver or language can enqueue and administer jobs transactionally."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from kongflow import Client
from tests.support.helpers import count_jobs, mark_running

GRAPHILE_COLUMNS = [
    "id",
    "queue_name",
    "task_identifier",
    "payload",
    "priority",
    "run_at",
    "attempts",
    "max_attempts",
    "last_error",
    "created_at",
    "updated_at",
    "key",
    "locked_at",
    "locked_by",
    "revision",
    "flags",
]


def q(client: Client, text: str) -> Any:
    return text.replace("S.", f'"{client.schema}".')


async def test_view_has_graphile_public_columns_first(client: Client) -> None:
    async with client.pool.connection() as conn:
        cur = await conn.execute(q(client, "select * from S.jobs limit 0"))
        names = [c.name for c in cur.description or []]
    assert names[: len(GRAPHILE_COLUMNS)] == GRAPHILE_COLUMNS


async def test_add_job_commits_and_rolls_back_with_the_transaction(
    client: Client, aconn: psycopg.AsyncConnection[Any]
) -> None:
    async with aconn.transaction():
        cur = await aconn.execute(
            q(
                client,
                "select id from S.add_job('sql_task', json_build_object('a', 1),"
                " job_key := 'k', priority := 3, flags := array['f'])",
            )
        )
        row = await cur.fetchone()
    assert row is not None
    job = await client.get_job(row[0])
    assert job is not None
    assert (job.task_identifier, job.payload, job.key, job.priority, job.flags) == (
        "sql_task",
        {"a": 1},
        "k",
        3,
        ["f"],
    )

    await aconn.execute("begin")
    await aconn.execute(q(client, "select S.add_job('rolled_back')"))
    await aconn.rollback()
    assert await count_jobs(client, "task_identifier = 'rolled_back'") == 0


async def test_add_job_key_modes_from_sql(client: Client) -> None:
    async with client.pool.connection() as conn:
        ids = set()
        for payload in ("[1]", "[2]"):
            cur = await conn.execute(
                q(client, "select id from S.add_job('t', %s::json, job_key := 'k')"), (payload,)
            )
            ids.add((await cur.fetchone())[0])
        cur = await conn.execute(
            q(
                client,
                "select id, revision from S.add_job('t', job_key := 'k',"
                " job_key_mode := 'unsafe_dedupe')",
            )
        )
        row = await cur.fetchone()
    assert len(ids) == 1
    assert row is not None and row[0] in ids and row[1] == 2
    job = await client.get_job(row[0])
    assert job is not None and job.payload == [1, 2]


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("S.add_job('')", "identifier"),
        ("S.add_job('t', max_attempts := 0)", "max_attempts"),
        ("S.add_job('t', job_key := '')", "job_key"),
        ("S.add_job('t', job_key := 'k', job_key_mode := 'merge')", "job_key_mode"),
        ("S.add_job('t', queue_name := '')", "queue_name"),
        (
            "S.add_jobs(array[row('t', null, null, null, 0, null, null, null)::S.job_spec])",
            "add_jobs: spec 1: max_attempts",
        ),
    ],
)
async def test_bad_input_from_sql_is_rejected_with_a_clear_message(
    client: Client, call: str, argument: str
) -> None:
    async with client.pool.connection() as conn:
        with pytest.raises(errors.InvalidParameterValue, match=argument):
            await conn.execute(q(client, f"select {call}"))
    assert await count_jobs(client) == 0


async def test_add_jobs_from_sql(client: Client) -> None:
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            q(
                client,
                "select id, queue_name from S.add_jobs(array["
                "row('t', '{\"n\": 1}', 'q', null, null, null, null, null)::S.job_spec,"
                "row('t', null, null, null, 3, 'key', 1, array['x'])::S.job_spec])",
            )
        )
        rows = await cur.fetchall()
    assert [r[1] for r in rows] == ["q", None]


async def test_admin_functions_from_sql(client: Client) -> None:
    a = await client.add_job("t", job_key="a")
    b = await client.add_job("t")
    c = await client.add_job("t")
    running = await client.add_job("t", job_key="r")
    await mark_running(client, running.id)
    async with client.pool.connection() as conn:
        await conn.execute(q(client, "select S.remove_job('a')"))
        await conn.execute(
            q(client, "select S.complete_jobs(array[%s, %s]::bigint[])"), (b.id, running.id)
        )
        await conn.execute(
            q(client, "select S.permanently_fail_jobs(array[%s]::bigint[], 'x')"), (c.id,)
        )
        await conn.execute(
            q(client, "select S.reschedule_jobs(array[%s]::bigint[], priority := 4)"),
            (running.id,),
        )
        await conn.execute(q(client, "select S.remove_job('r')"))
    assert await client.get_job(a.id) is None
    done = await client.get_job(b.id)
    assert done is not None and done.state == "completed"
    failed = await client.get_job(c.id)
    assert failed is not None and (failed.state, failed.last_error) == ("failed", "x")
    still = await client.get_job(running.id)
    assert still is not None
    assert (still.state, still.priority, still.key) == ("running", 0, None)
