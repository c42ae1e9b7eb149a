"""Workers as real processes (`kongflow worker`): queue limits across processes, SIGKILL and lease
rescue, a late result from a lost worker, a database restart under load, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kongflow import Client, JobSpec, Workflow, embedded
from tests.support.helpers import eventually, rows_of
from tests.support.worker_tasks import create_run_log

pytestmark = pytest.mark.slow


class Workers:
    """Starts `kongflow worker` processes for one schema and cleans them up."""

    def __init__(self, database_url: str, schema: str, tmp: Path) -> None:
        self.database_url = database_url
        self.schema = schema
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, "DATABASE_URL": self.database_url, "KONGFLOW_SCHEMA": self.schema}
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kongflow",
                "worker",
                "--tasks",
                "tests.support.worker_tasks",
                "--poll-interval",
                "0.2",
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        log = proc.log  # type: ignore[attr-defined]
        log.flush()
        log.seek(0)
        return str(log.read())

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                proc.wait(10)


@pytest.fixture
def workers(database_url: str, schema: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(database_url, schema, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
async def run_log(client: Client, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_run_log(conn, client.schema)


def finished(database_url: str, schema: str) -> int:
    return int(rows_of(database_url, f'select count(*) from "{schema}"._finished_jobs')[0][0])


def max_overlap(database_url: str, schema: str, queue: str) -> int:
    """The most runs of `queue` that were in progress at one instant."""
    rows = rows_of(
        database_url,
        f"""select coalesce(max(n), 0) from (
              select count(*) over (order by t, delta) as ignored,
                     sum(delta) over (order by t, delta rows unbounded preceding) as n
                from (select started_at as t, 1 as delta from "{schema}".run_log
                       where queue_name = %s
                      union all
                      select finished_at, -1 from "{schema}".run_log where queue_name = %s) e
            ) x""",
        (queue, queue),
    )
    return int(rows[0][0])


async def test_serial_queue_and_limit_of_three_hold_across_three_processes(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    await client.set_queue_limits({"limited": 3})
    procs = [workers.start("--concurrency", "5") for _ in range(3)]
    for proc in procs:
        await eventually(lambda p=proc: "running" in workers.output(p), 30, "workers to start")
    # The unqueued jobs outnumber one process's 5 slots, so the work must spread.
    await client.add_jobs(
        [JobSpec("record", {"sleep": 0.005}, queue_name="serial") for _ in range(200)]
        + [JobSpec("record", {"sleep": 0.2}, queue_name="limited") for _ in range(30)]
        + [JobSpec("record", {"sleep": 0.3}) for _ in range(20)]
    )
    await eventually(lambda: finished(database_url, client.schema) == 250, 120, "250 jobs")

    assert max_overlap(database_url, client.schema, "serial") == 1
    assert max_overlap(database_url, client.schema, "limited") == 3
    pids = rows_of(database_url, f'select count(distinct pid) from "{client.schema}".run_log')
    assert pids[0][0] >= 2  # the runs were spread over several processes
    runs = rows_of(
        database_url, f'select count(*), count(distinct job_id) from "{client.schema}".run_log'
    )
    assert runs[0] == (250, 250)


async def test_sigkill_mid_job_every_job_completes_once_after_the_lease(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    await client.add_jobs([JobSpec("record", {"sleep": 0.5}) for _ in range(30)])
    victim = workers.start("--concurrency", "4", "--lease", "2")

    def victim_running() -> bool:
        rows = rows_of(
            database_url,
            f'select count(*) from "{client.schema}"._jobs where locked_by like %s',
            (f"%:{victim.pid}:%",),
        )
        return int(rows[0][0]) == 4

    await eventually(victim_running, 30, "the victim to hold 4 jobs")
    held = {
        r[0]
        for r in rows_of(
            database_url, f'select id from "{client.schema}"._jobs where locked_at is not null'
        )
    }
    victim.kill()
    victim.wait()
    workers.start("--concurrency", "4", "--lease", "2")
    await eventually(lambda: finished(database_url, client.schema) == 30, 60, "30 jobs")

    rows = rows_of(
        database_url, f'select id, state, attempts, errors from "{client.schema}"._finished_jobs'
    )
    assert {r[1] for r in rows} == {"completed"}
    rescued = {r[0]: r for r in rows if r[0] in held}
    assert len(rescued) == 4
    for _, _, attempts, errors in rescued.values():
        assert attempts == 2
        assert errors[-1]["type"] == "WorkerLost"


async def test_a_paused_worker_s_late_result_is_rejected(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    (job,) = await client.add_jobs([JobSpec("record", {"sleep": 1.0})])
    frozen = workers.start("--concurrency", "1", "--lease", "1.5")
    await eventually(
        lambda: bool(
            rows_of(
                database_url,
                f'select 1 from "{client.schema}".run_log where job_id = %s',
                (job.id,),
            )
            or rows_of(
                database_url, f'select 1 from "{client.schema}"._jobs where locked_at is not null'
            )
        ),
        30,
        "the job to start",
    )
    os.kill(frozen.pid, signal.SIGSTOP)  # alive but silent: its lease runs out
    rescuer = workers.start("--concurrency", "1", "--lease", "1.5")
    # Rescued, the job is ready at once: the rescuer takes it.
    await eventually(lambda: finished(database_url, client.schema) == 1, 30, "the job to finish")
    os.kill(frozen.pid, signal.SIGCONT)
    await eventually(lambda: "rejected" in workers.output(frozen), 30, "the late result")
    (row,) = rows_of(
        database_url,
        f'select state, attempts from "{client.schema}"._finished_jobs where id = %s',
        (job.id,),
    )
    assert row == ("completed", 2)
    assert "registering again" in workers.output(frozen)
    assert rescuer.poll() is None


async def test_graceful_shutdown_under_load_loses_nothing(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    await client.add_jobs([JobSpec("record", {"sleep": 0.1}) for _ in range(100)])
    first = workers.start("--concurrency", "5", "--shutdown-timeout", "10")
    await eventually(lambda: finished(database_url, client.schema) >= 10, 30, "some progress")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    out = workers.output(first)
    assert "stopping" in out
    # nothing was left locked: the first worker finished what it held
    assert rows_of(
        database_url, f'select count(*) from "{client.schema}"._jobs where locked_at is not null'
    ) == [(0,)]
    workers.start("--concurrency", "5")
    await eventually(lambda: finished(database_url, client.schema) == 100, 60, "100 jobs")
    runs = rows_of(
        database_url, f'select count(*), count(distinct job_id) from "{client.schema}".run_log'
    )
    assert runs[0] == (100, 100)  # each ran exactly once


async def test_database_restart_under_load(tmp_path: Path) -> None:
    pgdata = Path(tempfile.mkdtemp(prefix="kf-restart-")) / "pgdata"
    url = embedded.start(pgdata)
    schema = "restart"
    group = Workers(url, schema, tmp_path)
    try:
        async with Client(url, schema=schema) as client:
            with psycopg.connect(url, autocommit=True) as conn:
                create_run_log(conn, schema)
            await client.add_jobs([JobSpec("record", {"sleep": 0.02}) for _ in range(300)])
        group.start("--concurrency", "4")
        await eventually(lambda: finished(url, schema) >= 30, 60, "some progress")
        embedded.stop(pgdata)
        await asyncio.sleep(2)
        embedded.start(pgdata)
        await eventually(lambda: finished(url, schema) == 300, 120, "all 300 jobs")
        assert group.procs[0].poll() is None  # the worker rode it out
        assert rows_of(url, f'select count(distinct job_id) from "{schema}".run_log') == [(300,)]
    finally:
        group.stop_all()
        embedded.stop(pgdata)


async def test_a_killed_workers_jobs_run_again_promptly_ahead_of_the_backlog(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    """SIGKILL with a backlog queued: the orphans run again within the lease plus the rescue
    interval (plus slack for a loaded machine), before the jobs that were waiting behind them,
    not after the whole backlog."""
    lease, rescue_interval = 2.0, 1.0  # the leader rescues every min(lease / 2, 5 s)
    await client.add_jobs([JobSpec("record", {"sleep": 1.0}) for _ in range(120)])
    victim = workers.start("--concurrency", "4", "--lease", str(lease))

    def locked_by(pid: int) -> list[int]:
        rows = rows_of(
            database_url,
            f'select id from "{client.schema}"._jobs where locked_by like %s',
            (f"%:{pid}:%",),
        )
        return [r[0] for r in rows]

    await eventually(lambda: len(locked_by(victim.pid)) == 4, 30, "the victim to hold 4 jobs")
    survivor = workers.start("--concurrency", "4", "--lease", str(lease))
    await eventually(lambda: len(locked_by(survivor.pid)) > 0, 30, "the survivor to work")
    victim.kill()
    victim.wait()
    ((killed_at,),) = rows_of(database_url, "select clock_timestamp()")
    # Read once it is dead (not before: it could finish one meanwhile), and before its lease
    # can have run out.
    orphans = locked_by(victim.pid)
    assert orphans

    def restarts() -> list[tuple[int, Any]]:
        return rows_of(
            database_url,
            f'select job_id, started_at from "{client.schema}".run_log'
            " where job_id = any(%s) and attempt = 2",
            (orphans,),
        )

    # Under the old rescue this took the whole backlog: over 25 s here.
    await eventually(lambda: len(restarts()) == len(orphans), 120, "the orphans to run again")
    latest = max(started for _, started in restarts())
    assert (latest - killed_at).total_seconds() < lease + rescue_interval + 10
    # Ahead of the backlog: once released, they went first (but for a claim already on its
    # way then: two at most, each of at most a third of the survivor's slots).
    ((released_at,),) = rows_of(
        database_url,
        f"""select max((e ->> 'at')::timestamptz) from "{client.schema}"._all_jobs a,
              jsonb_array_elements(a.errors) e
            where a.id = any(%s) and e ->> 'type' = 'WorkerLost'""",
        (orphans,),
    )
    ((overtaken,),) = rows_of(
        database_url,
        f'select count(*) from "{client.schema}".run_log'
        " where job_id > %s and attempt = 1 and started_at > %s and started_at < %s",
        (max(orphans), released_at, latest),
    )
    assert overtaken <= 4


def most_starts_in_a_window(starts: list[Any], window: timedelta) -> int:
    """The most claim times that fall in any window of `window` (t - window, t]."""
    starts = sorted(starts)
    return max(
        sum(1 for other in starts[: i + 1] if other > start - window)
        for i, start in enumerate(starts)
    )


async def test_a_rate_limit_holds_in_every_window_across_three_processes(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    await client.set_queue_limits({"rated": 50})  # the rate, not the concurrency, limits it
    await client.set_rate_limits({"rated": "4/500ms"})
    procs = [workers.start("--concurrency", "10", "--poll-interval", "0.05") for _ in range(3)]
    for proc in procs:
        await eventually(lambda p=proc: "running" in workers.output(p), 30, "workers to start")
    await client.add_jobs([JobSpec("record", {}, queue_name="rated") for _ in range(40)])
    await eventually(lambda: finished(database_url, client.schema) == 40, 90, "40 jobs")
    rows = rows_of(database_url, f'select locked_at, attempt, pid from "{client.schema}".run_log')
    assert most_starts_in_a_window([r[0] for r in rows], timedelta(milliseconds=500)) == 4
    assert {attempt for _, attempt, _ in rows} == {1}  # waiting spent no attempt
    assert len({pid for _, _, pid in rows}) >= 2


def diamond(sleep_c: float = 0.3) -> Workflow:
    flow = Workflow("diamond")
    a = flow.step("a", "record", {"sleep": 0.3})
    b = flow.step("b", "record", {"sleep": 0.3}, after=[a])
    c = flow.step("c", "record", {"sleep": sleep_c}, after=[a])
    flow.step("d", "record", {"sleep": 0.1}, after=[b, c])
    return flow


def runs_by_job(database_url: str, schema: str) -> dict[int, list[tuple[Any, Any, int]]]:
    """Each job's recorded runs: (started_at, finished_at, attempt)."""
    runs: dict[int, list[tuple[Any, Any, int]]] = {}
    for job_id, started, finished_at, attempt in rows_of(
        database_url, f'select job_id, started_at, finished_at, attempt from "{schema}".run_log'
    ):
        runs.setdefault(job_id, []).append((started, finished_at, attempt))
    return runs


async def test_a_diamond_runs_in_order_across_three_processes(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    procs = [workers.start("--concurrency", "4") for _ in range(3)]
    for proc in procs:
        await eventually(lambda p=proc: "running" in workers.output(p), 30, "workers to start")
    flows = [await client.add_workflow(diamond()) for _ in range(5)]
    await eventually(lambda: finished(database_url, client.schema) == 20, 90, "20 steps")
    runs = runs_by_job(database_url, client.schema)
    for flow in flows:
        ((a,), (b,), (c,), (d,)) = (runs[flow.jobs[step].id] for step in "abcd")
        assert b[0] >= a[1] and c[0] >= a[1]  # B and C started after A finished
        assert d[0] >= max(b[1], c[1])  # D after both
        steps = await client.workflow_jobs(flow.id)
        assert {name: job.state for name, job in steps.items()} == dict.fromkeys(
            "abcd", "completed"
        )
    pids = rows_of(database_url, f'select count(distinct pid) from "{client.schema}".run_log')
    assert pids[0][0] >= 2


async def test_a_worker_killed_during_c_its_dependent_still_runs_once_after_it(
    client: Client, workers: Workers, run_log: None, database_url: str
) -> None:
    victim = workers.start("--concurrency", "4", "--lease", "2")
    await eventually(lambda: "running" in workers.output(victim), 30, "the worker to start")
    flow = await client.add_workflow(diamond(sleep_c=30))
    c_id = flow.jobs["c"].id

    def c_running_on_victim() -> bool:
        rows = rows_of(
            database_url,
            f'select 1 from "{client.schema}"._jobs where id = %s and locked_by like %s',
            (c_id, f"%:{victim.pid}:%"),
        )
        return bool(rows)

    await eventually(c_running_on_victim, 30, "C to run on the victim")
    victim.kill()
    victim.wait()
    with psycopg.connect(database_url, autocommit=True) as conn:  # the rerun is quick
        conn.execute(
            f'update "{client.schema}"._jobs set payload = %s where id = %s',  # type: ignore[arg-type]
            ('{"sleep": 0.2}', c_id),
        )
    workers.start("--concurrency", "4", "--lease", "2")
    await eventually(lambda: finished(database_url, client.schema) == 4, 120, "the 4 steps")
    runs = runs_by_job(database_url, client.schema)
    (c,) = runs[c_id]
    assert c[2] == 2  # the killed attempt recorded nothing; the second ran
    ((d_start, _, d_attempt),) = runs[flow.jobs["d"].id]
    assert d_start >= c[1] and d_attempt == 1
