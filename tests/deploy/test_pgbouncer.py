"""kongflow behind PgBouncer in transaction pooling mode, as deployed: the schema migrated, jobs
enqueued and `kongflow worker --poll-only` processes run, all through PgBouncer (Debian's
package, started here in front of the test database with few server connections, so that
consecutive transactions of one client land on different server connections).

Without pgbouncer installed the tests are skipped, unless CI is set: CI installs it, so there
its absence is a failure.

Known defect (marked below, strict): kongflow's own connections let psycopg prepare statements
server-side, which transaction pooling breaks; see PreparedStatementClash. A test so marked
fails as soon as the defect is gone: then remove the mark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kongflow import Client, JobSpec, RunningJob, Worker
from kongflow.engine.pool import open_pool
from tests.deploy.pgbouncer import (
    PgBouncer,
    PreparedStatementClash,
    clashes,
    clashes_raised,
    pgbouncer_binary,
    upstream_of,
)
from tests.support.helpers import eventually, rows_of

SERVER_CONNECTIONS = 3

TASKS_MODULE = textwrap.dedent(
    '''
    """Handlers of the PgBouncer test: each run is recorded, through PgBouncer too."""
    import asyncio
    import os

    import psycopg

    SCHEMA = os.environ["KONGFLOW_SCHEMA"]
    URL = os.environ["DATABASE_URL"]


    async def record(payload, job):
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            cur = await conn.execute("select clock_timestamp()")
            (started,) = await cur.fetchone()
            await asyncio.sleep(payload.get("sleep", 0))
            await conn.execute(
                f'insert into "{SCHEMA}".done values (%s, %s, %s, %s, %s, %s, clock_timestamp())',
                (job.id, job.queue_name, job.key, payload.get("n"), os.getpid(), started),
            )


    async def hang(payload, job):
        await asyncio.sleep(300)


    tasks = {"record": record, "hang": hang}
    '''
)


@pytest.fixture
def pgbouncer(database_url: str, tmp_path: Path) -> Iterator[PgBouncer]:
    binary = pgbouncer_binary()
    if binary is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI installs it, so it must be there")
        pytest.skip(message)
    workdir = tmp_path / "pgbouncer"
    workdir.mkdir()
    bouncer = PgBouncer(binary, upstream_of(database_url), workdir, SERVER_CONNECTIONS)
    try:
        bouncer.wait_ready()
        yield bouncer
    finally:
        bouncer.stop()


def kongflow(
    bouncer: PgBouncer, schema: str, cwd: Path, *args: str, **popen: Any
) -> subprocess.Popen[str]:
    """`kongflow ARGS` as a process whose DATABASE_URL is PgBouncer, run in `cwd`."""
    env = {
        **os.environ,
        "DATABASE_URL": bouncer.url,
        "KONGFLOW_SCHEMA": schema,
        "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kongflow", *args], env=env, cwd=cwd, text=True, **popen
    )


def start_worker(bouncer: PgBouncer, schema: str, cwd: Path, log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as out:
        return kongflow(
            bouncer,
            schema,
            cwd,
            "worker",
            "--tasks",
            "pgb_tasks",
            "--poll-only",
            "--poll-interval",
            "0.1",
            "--concurrency",
            "20",
            "--lease",
            "3",  # a heartbeat a second: it carries cancel requests when nothing LISTENs
            "--shutdown-timeout",
            "10",
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def enqueue_and_run(bouncer: PgBouncer, database_url: str, schema: str) -> float:
    """Through PgBouncer, enqueue 320 jobs and a hanging one and wait until the 320 ran; then
    cancel the hanging one while it runs, with no NOTIFY to carry the request (the heartbeat
    does). Returns how long the cancel took."""
    async with Client(
        bouncer.url, schema=schema, migrate=False, max_connections=4, prepared_statements=False
    ) as client:
        # 150 in one statement, 100 by COPY, 40 one by one on a serial queue, and 30 job keys
        # each enqueued twice (the second replaces the first): 320 jobs.
        await client.add_jobs(JobSpec("record", {"n": n}) for n in range(150))
        await client.add_jobs_fast(JobSpec("record", {"n": n}) for n in range(150, 250))
        for n in range(250, 290):
            await client.add_job("record", {"n": n, "sleep": 0.01}, queue_name="serial")
        # In one transaction of the application's own connection, so no worker sees the
        # first of a key before the second replaces it.
        async with (
            await psycopg.AsyncConnection.connect(bouncer.url, prepare_threshold=None) as conn,
            conn.transaction(),
        ):
            for round_ in (0, 1):
                for k in range(30):
                    n = 1000 * round_ + k
                    await client.add_job("record", {"n": n}, job_key=f"key-{k}", conn=conn)
        hanging = await client.add_job("hang", {})
        done = f'select count(*) from "{schema}".done'
        await eventually(lambda: rows_of(database_url, done)[0][0] >= 320, 90, "320 jobs done")
        running = f'select locked_at is not null from "{schema}"._jobs where id = {hanging.id}'
        await eventually(lambda: rows_of(database_url, running) == [(True,)], 30, "hang to run")
        await client.cancel_job(hanging.id)
    started = time.monotonic()
    cancelled = f'select state from "{schema}"._finished_jobs where id = {hanging.id}'
    await eventually(lambda: rows_of(database_url, cancelled) == [("cancelled",)], 15, "cancel")
    return time.monotonic() - started


async def test_workers_poll_only_through_pgbouncer_run_every_job_once(
    pgbouncer: PgBouncer, database_url: str, schema: str, tmp_path: Path
) -> None:
    # The schema, migrated through PgBouncer by the command a deployment runs.
    migrate = kongflow(pgbouncer, schema, tmp_path, "migrate", stdout=subprocess.PIPE)
    out, _ = migrate.communicate(timeout=120)
    assert migrate.returncode == 0, out
    assert "applied" in out
    (tmp_path / "pgb_tasks.py").write_text(TASKS_MODULE)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f'create table "{schema}".done (job_id bigint, queue_name text, job_key text,'  # type: ignore[arg-type]
            " n int, pid int, started_at timestamptz, finished_at timestamptz)"
        )

    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    workers = [start_worker(pgbouncer, schema, tmp_path, log) for log in logs]
    try:
        # Both workers polling before the jobs come, so that both take some.
        registered = f'select count(*) from "{schema}"._workers'
        await eventually(lambda: rows_of(database_url, registered) == [(2,)], 60, "two workers")
        with clashes_raised():
            cancel_seconds = await enqueue_and_run(pgbouncer, database_url, schema)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(30) == 0
    except PreparedStatementClash:
        raise
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        # Under the known defect jobs are retried, run twice or wait for their lease: that is
        # the defect, not another failure.
        clashed = [line for log in logs for line in clashes(log.read_text())]
        if clashed:
            raise PreparedStatementClash("\n".join(clashed[:10])) from exc
        tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
        raise AssertionError(f"{exc}\n{tails}") from exc
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)

    outputs = [log.read_text() for log in logs]
    clashed = [line for output in outputs for line in clashes(output)]
    if clashed:
        raise PreparedStatementClash("\n".join(clashed[:10]))
    for output in outputs:
        assert "stopping" in output
        # No retried claim, no failed heartbeat or write: nothing went wrong on the way.
        for line in output.splitlines():
            assert " WARNING " not in line and " ERROR " not in line, output
    # Every job ran exactly once, on its first attempt, and completed.
    runs = rows_of(database_url, f'select count(*), count(distinct job_id) from "{schema}".done')
    assert runs == [(320, 320)]
    completed = rows_of(
        database_url,
        f"""select attempts, count(*) from "{schema}"._finished_jobs
             where state = 'completed' group by 1""",
    )
    assert completed == [(1, 320)]
    assert cancel_seconds < 10
    # Each key ran once, with the payload of its second enqueue.
    keyed = rows_of(
        database_url,
        f'select job_key, n from "{schema}".done where job_key is not null order by n',
    )
    assert keyed == [(f"key-{k}", 1000 + k) for k in range(30)]
    # The serial queue ran one job at a time, across both workers.
    overlaps = rows_of(
        database_url,
        f"""select count(*) from "{schema}".done a join "{schema}".done b
              on a.job_id < b.job_id and a.started_at < b.finished_at
             and b.started_at < a.finished_at
           where a.queue_name = 'serial' and b.queue_name = 'serial'""",
    )
    assert overlaps == [(0,)]
    assert len(rows_of(database_url, f'select distinct pid from "{schema}".done')) == 2
    # Nothing left locked or waiting, no worker registered: both left cleanly.
    assert rows_of(database_url, f'select count(*) from "{schema}"._jobs') == [(0,)]
    assert rows_of(database_url, f'select count(*) from "{schema}"._workers') == [(0,)]
    # And all of it went through PgBouncer's few server connections, in transaction mode.
    pools = [p for p in pgbouncer.admin("show pools") if p["database"] == "kongflow"]
    assert pools and all(p["pool_mode"] == "transaction" for p in pools)
    servers = [s for s in pgbouncer.admin("show servers") if s["database"] == "kongflow"]
    assert len(servers) <= SERVER_CONNECTIONS


class Order(psycopg.Rollback):
    """Raised in a transaction to roll it back (the order is abandoned)."""


async def test_transactional_enqueue_with_the_users_connections_through_pgbouncer(
    pgbouncer: PgBouncer, database_url: str, schema: str
) -> None:
    """An application's own connections through PgBouncer (with psycopg's prepared statements
    off, as psycopg advises behind transaction pooling): each job commits or rolls back with
    the order written in its transaction, from Python (async and sync) and from plain SQL."""
    # The client migrates through PgBouncer as it opens; it then only lends its SQL here.
    with clashes_raised():
        async with Client(
            pgbouncer.url, schema=schema, max_connections=1, prepared_statements=False
        ) as client:
            pass
    async with await psycopg.AsyncConnection.connect(
        pgbouncer.url, autocommit=True, prepare_threshold=None
    ) as conn:
        await conn.execute(f'create table "{schema}".orders (id int primary key)')

    async def handle_requests(first: int) -> None:
        """Eight orders, every other one abandoned, each in a transaction of its own."""
        async with await psycopg.AsyncConnection.connect(
            pgbouncer.url, prepare_threshold=None
        ) as conn:
            for order in range(first, first + 8):
                async with conn.transaction():
                    await conn.execute(f'insert into "{schema}".orders values (%s)', (order,))
                    await client.add_job("charge_order", {"order": order}, conn=conn)
                    if order % 2:
                        raise Order()

    async def handle_sync_requests(first: int) -> None:
        with psycopg.connect(pgbouncer.url, prepare_threshold=None) as conn:
            for order in range(first, first + 8):
                with conn.transaction():
                    conn.execute(f'insert into "{schema}".orders values (%s)', (order,))
                    await client.add_jobs(
                        [JobSpec("charge_order", {"order": order}, job_key=f"order-{order}")],
                        conn=conn,
                    )
                    if order % 2:
                        raise Order()

    async def handle_sql_requests(first: int) -> None:
        async with await psycopg.AsyncConnection.connect(
            pgbouncer.url, prepare_threshold=None
        ) as conn:
            for order in range(first, first + 8):
                async with conn.transaction():
                    await conn.execute(f'insert into "{schema}".orders values (%s)', (order,))
                    await conn.execute(
                        f"select \"{schema}\".add_job('charge_order',"
                        " json_build_object('order', %s::int), queue_name := 'orders')",
                        (order,),
                    )
                    if order % 2:
                        raise Order()

    async with Client(pgbouncer.url, schema=schema, migrate=False, max_connections=1) as client:
        await asyncio.gather(
            *(handle_requests(first) for first in (0, 100, 200, 300)),
            handle_sql_requests(400),
            handle_sql_requests(500),
        )
        await handle_sync_requests(600)

    committed = sorted(o for first in range(0, 700, 100) for o in range(first, first + 8, 2))
    orders = rows_of(database_url, f'select id from "{schema}".orders order by id')
    assert [o for (o,) in orders] == committed
    jobs = rows_of(
        database_url,
        f"""select (payload ->> 'order')::int, queue_name, key from "{schema}".jobs
             order by 1""",
    )
    assert [order for order, _, _ in jobs] == committed
    assert {(queue, key) for order, queue, key in jobs if order >= 600} == {
        (None, f"order-{order}") for order in committed if order >= 600
    }
    assert {queue for order, queue, _ in jobs if 400 <= order < 600} == {"orders"}


async def test_the_client_and_a_poll_only_worker_through_pgbouncer_run_every_job_once(
    pgbouncer: PgBouncer, database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kongflow's own pools behind the pooler: a Client with `prepared_statements=False`
    enqueueing from a few tasks at once (as a web app's requests do), and a Worker with
    `poll_only=True` (whose pool then prepares nothing). Every job runs once; nothing is
    logged."""
    ran: list[int] = []

    async def record(payload: dict[str, int], job: RunningJob) -> None:
        ran.append(payload["n"])

    async def enqueue(client: Client, first: int) -> None:
        for n in range(first, first + 10):
            await client.add_job("record", {"n": n}, job_key=f"n-{n}" if n % 3 == 0 else None)

    caplog.set_level(logging.WARNING, logger="kongflow")
    with clashes_raised():
        async with Client(
            pgbouncer.url, schema=schema, max_connections=6, prepared_statements=False
        ) as client:
            await asyncio.gather(*(enqueue(client, first) for first in range(0, 60, 10)))
        async with Worker(
            pgbouncer.url, {"record": record}, schema=schema, poll_only=True, poll_interval=0.05
        ) as worker:
            await asyncio.wait_for(worker.drain(), 60)
    assert sorted(ran) == list(range(60))
    assert caplog.records == []
    finished = f'select state, attempts, count(*) from "{schema}"._finished_jobs group by 1, 2'
    assert rows_of(database_url, finished) == [("completed", 1, 60)]


async def test_a_session_time_zone_set_outside_a_transaction_follows_each_client(
    pgbouncer: PgBouncer,
) -> None:
    """The worker's pool sets `time zone 'UTC'` on each new connection, outside any transaction
    (engine/pool.py, read_times_in_utc). PgBouncer tracks TimeZone for each client and sets it
    on whichever server connection the client's next transaction gets, so clients of another
    zone sharing that server connection neither lose nor leak theirs. Two transactions held
    open pin two of the three server connections, so every other client shares the third.
    (The statements are not prepared, so that this test is about time zones alone.)"""
    pool = await open_pool(pgbouncer.url, purpose="tz", min_size=3, max_size=3, utc_sessions=True)
    tokyo = [
        await psycopg.AsyncConnection.connect(pgbouncer.url, autocommit=True) for _ in range(3)
    ]
    blockers = [await psycopg.AsyncConnection.connect(pgbouncer.url) for _ in range(2)]
    query = "select current_setting('TimeZone'), pg_backend_pid()"

    async def zone_and_backend(conn: psycopg.AsyncConnection[Any]) -> tuple[str, int]:
        cur = await conn.execute(query, prepare=False)
        row = await cur.fetchone()
        assert row is not None
        return row[0], row[1]

    async def utc() -> tuple[str, int]:
        async with pool.connection() as conn:
            return await zone_and_backend(conn)

    try:
        for conn in tokyo:
            await conn.execute("set time zone 'Asia/Tokyo'", prepare=False)
        for _ in range(3):
            pinned = {(await zone_and_backend(blocker))[1] for blocker in blockers}
            seen = await asyncio.gather(
                *(utc() for _ in range(6)), *(zone_and_backend(c) for c in tokyo * 2)
            )
            for blocker in blockers:
                await blocker.rollback()
            zones = [zone for zone, _ in seen]
            assert zones == ["UTC"] * 6 + ["Asia/Tokyo"] * 6
            # One server connection served them all, in turns: UTC, then Tokyo, then UTC...
            backends = {backend for _, backend in seen}
            assert len(backends) == 1 and not backends & pinned
    finally:
        for conn in [*tokyo, *blockers]:
            await conn.close()
        await pool.close()
