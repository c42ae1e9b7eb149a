"""`kongflow queues|jobs|cleanup|worker --crontab` against a real database (in-process runner)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from kongflow import Client, Job
from kongflow.cli import app
from tests.support.helpers import mark_running


@pytest.fixture
def cli(database_url: str, schema: str) -> Any:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env=env)

    asyncio.run(_with(database_url, schema, lambda c: asyncio.sleep(0)))  # migrate
    return invoke


async def _with(database_url: str, schema: str, work: Any) -> Any:
    async with Client(database_url, schema=schema) as client:
        return await work(client)


def run(database_url: str, schema: str, work: Any) -> Any:
    return asyncio.run(_with(database_url, schema, work))


def test_queues_lists_counts_and_pause_resume(cli: Any, database_url: str, schema: str) -> None:
    async def setup(client: Client) -> None:
        await client.set_queue_limits({"mail": 4})
        await client.add_job("send", queue_name="mail")
        await client.add_job("send", queue_name="mail")
        failed = await client.add_job("send", queue_name="other")
        await client.permanently_fail_jobs([failed.id])
        await client.add_job("loose")

    run(database_url, schema, setup)
    out = cli("queues")
    assert out.exit_code == 0, out.output
    mail = next(line for line in out.output.splitlines() if "mail" in line)
    assert mail.split("│")[2].strip() == "2"  # available
    assert "4" in mail  # the limit
    assert "(no queue)" in out.output

    assert cli("queues", "pause", "mail").exit_code == 0
    assert "paused" in next(line for line in cli("queues").output.splitlines() if "mail" in line)
    assert cli("queues", "resume", "mail").exit_code == 0
    assert "paused" not in next(
        line for line in cli("queues").output.splitlines() if "mail" in line
    )


def test_jobs_list_show_retry_cancel_remove(cli: Any, database_url: str, schema: str) -> None:
    async def setup(client: Client) -> list[Job]:
        a = await client.add_job("alpha", {"n": 1}, max_attempts=1)
        b = await client.add_job("beta", {"n": 2})
        c = await client.add_job("gamma", {"n": 3})
        running = await client.add_job("delta")
        await client.permanently_fail_jobs([a.id], "it broke")
        await mark_running(client, running.id)
        return [a, b, c, running]

    a, b, c, running = run(database_url, schema, setup)

    listed = cli("jobs", "list", "--state", "failed")
    assert listed.exit_code == 0
    assert "alpha" in listed.output and "beta" not in listed.output
    assert cli("jobs", "list", "--state", "nonsense").exit_code == 1

    shown = cli("jobs", "show", str(a.id))
    assert shown.exit_code == 0
    assert '"n": 1' in shown.output and "it broke" in shown.output
    assert cli("jobs", "show", "999999").exit_code == 1

    retried = cli("jobs", "retry", str(a.id))
    assert retried.exit_code == 0, retried.output
    job = run(database_url, schema, lambda cl: cl.get_job(a.id))
    assert (job.state, job.max_attempts) == ("available", 2)  # one more attempt

    assert cli("jobs", "cancel", str(b.id)).exit_code == 0
    assert run(database_url, schema, lambda cl: cl.get_job(b.id)).state == "cancelled"

    removed = cli("jobs", "remove", str(c.id), str(running.id))
    assert removed.exit_code == 1  # the running one is not removed
    assert f"job {c.id}: removed" in removed.output
    assert run(database_url, schema, lambda cl: cl.get_job(c.id)) is None
    assert run(database_url, schema, lambda cl: cl.get_job(running.id)) is not None


def test_cleanup(cli: Any, database_url: str, schema: str) -> None:
    async def setup(client: Client) -> None:
        jobs = [await client.add_job("t") for _ in range(5)]
        await client.complete_jobs([j.id for j in jobs])

    run(database_url, schema, setup)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"update \"{schema}\"._finished_jobs set finished_at = now() - interval '2h'")  # type: ignore[arg-type]
    out = cli("cleanup", "--batch", "2")
    assert out.exit_code == 0, out.output
    assert "deleted 5 finished and 0 failed" in out.output
    assert cli("cleanup", "--failed-retention", "soon").exit_code == 1


def test_worker_rejects_a_bad_crontab_with_its_line(cli: Any, tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("# nightly\n0 3 * * * cleanup\n0 99 * * * broken\n")
    out = cli("worker", "--tasks", "kongflow.engine.benchmark:tasks", "--crontab", str(crontab))
    assert out.exit_code == 1
    assert "crontab line 3" in out.output


def test_unreachable_database_is_reported_clearly() -> None:
    out = CliRunner().invoke(
        app, ["jobs", "list"], env={"DATABASE_URL": "postgresql://x@127.0.0.1:1/none"}
    )
    assert out.exit_code == 1
    assert "cannot reach PostgreSQL" in out.output
    assert "Traceback" not in out.output


def test_json_logs_are_one_object_per_line() -> None:
    import json
    import logging

    from kongflow.cli.worker import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "kongflow.worker", logging.ERROR, __file__, 1, "job %s failed", (7,), None
        )
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "ERROR",
        "kongflow.worker",
        "job 7 failed",
    )
    assert "ValueError: boom" in entry["exception"]


def test_pausing_or_resuming_an_unknown_queue_is_an_error(
    cli: Any, database_url: str, schema: str
) -> None:
    async def setup(client: Client) -> None:
        await client.add_job("send", queue_name="mail")
        await client.set_queue_limits({"runs:*": 1})

    run(database_url, schema, setup)
    for command in ("pause", "resume"):
        out = cli("queues", command, "maill")
        assert out.exit_code == 1, out.output
        assert "no queue 'maill'" in out.output
        assert "Traceback" not in out.output
    assert cli("queues", "pause", "q\x00").exit_code == 1  # refused by name, not a crash
    stats = run(database_url, schema, lambda c: c.queue_stats())
    assert [s["queue_name"] for s in stats] == ["mail"]  # nothing was created
    # Known queues: one with jobs, one a limit pattern matches (paused ahead of its first job).
    for name in ("mail", "runs:42"):
        assert cli("queues", "pause", name).exit_code == 0
        assert cli("queues", "resume", name).exit_code == 0


def test_cancel_and_retry_say_what_happened_to_each_job(
    cli: Any, database_url: str, schema: str
) -> None:
    async def setup(client: Client) -> list[Job]:
        waiting = await client.add_job("a")
        running = await client.add_job("b")
        done = await client.add_job("c")
        failed = await client.add_job("d", max_attempts=1)
        await mark_running(client, running.id)
        await client.complete_jobs([done.id])
        await client.permanently_fail_jobs([failed.id])
        return [waiting, running, done, failed]

    waiting, running, done, failed = run(database_url, schema, setup)
    out = cli("jobs", "cancel", str(waiting.id), str(running.id), str(done.id), "999999")
    assert out.exit_code == 1
    assert f"job {waiting.id}: cancelled" in out.output
    assert f"job {running.id}: running: cancel requested" in out.output
    assert f"job {done.id}: not cancelled: already finished (completed)" in out.output
    assert "job 999999: not cancelled: no such job" in out.output
    again = cli("jobs", "cancel", str(waiting.id))
    assert again.exit_code == 1
    assert "already finished (cancelled)" in again.output
    assert cli("jobs", "cancel", str(failed.id)).exit_code == 0  # failed for good: cancellable

    more = run(database_url, schema, lambda c: c.add_job("e", max_attempts=1))
    run(database_url, schema, lambda c: c.permanently_fail_jobs([more.id]))
    out = cli("jobs", "retry", str(more.id), str(running.id), str(done.id), "999999")
    assert out.exit_code == 1
    assert f"job {more.id}: retried: ready to run" in out.output
    assert f"job {running.id}: not retried: it is running" in out.output
    assert f"job {done.id}: not retried: already finished (completed)" in out.output
    assert "job 999999: not retried: no such job" in out.output


def test_version() -> None:
    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0
    assert out.output.strip() == f"kongflow {importlib.metadata.version('kongflow')}"


def test_queues_lists_tasks_no_live_worker_takes(cli: Any, database_url: str, schema: str) -> None:
    async def setup(client: Client) -> None:
        await client.add_job("ghost", queue_name="mail")
        await client.add_job("ghost")

    run(database_url, schema, setup)
    out = cli("queues")
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if "ghost" in line)
    assert "2" in line and "(no queue), mail" in line
    assert "no live worker takes" in out.output


def test_worker_metrics_bind_the_interface_asked_for(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    log = tmp_path / "worker.log"
    with open(log, "w") as output:
        proc = subprocess.Popen(
            [
                *(
                    sys.executable,
                    "-m",
                    "kongflow",
                    "worker",
                    "--tasks",
                    "kongflow.engine.benchmark:tasks",
                ),
                *("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    assert b"kongflow" in r.read()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        local = {line.split()[1] for line in listening if line.split()[3] == "0A"}  # LISTEN
        assert f"0100007F:{port:04X}" in local  # 127.0.0.1, not every interface
        assert f"00000000:{port:04X}" not in local
    finally:
        proc.terminate()
        proc.wait(30)


def test_worker_once_runs_what_is_ready_and_the_jobs_those_make_ready_then_exits(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    (tmp_path / "chain.py").write_text(
        "import os\n"
        "from kongflow import Client\n"
        "async def step(payload, job):\n"
        "    if payload['n'] < 3:\n"
        "        async with Client(schema=os.environ['KONGFLOW_SCHEMA']) as client:\n"
        "            await client.add_job('step', {'n': payload['n'] + 1})\n"
        "tasks = {'step': step}\n"
    )

    async def setup(client: Client) -> None:
        await client.add_job("step", {"n": 1})
        await client.add_job("step", {"n": 10}, run_at=datetime.now(UTC) + timedelta(hours=1))

    run(database_url, schema, setup)
    env = {**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    done = subprocess.run(
        [sys.executable, "-m", "kongflow", "worker", "--tasks", "chain", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    async def states(client: Client) -> list[tuple[Any, str]]:
        return [(j.payload["n"], j.state) for j in await client.list_jobs()]

    assert sorted(run(database_url, schema, states)) == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
        (10, "scheduled"),  # not ready: left for later
    ]
