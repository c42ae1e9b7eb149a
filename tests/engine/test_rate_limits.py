"""Rate limits: a pattern's limit holds for each queue it matches (a queue per customer is a
limit per customer) while other queues run at full speed; limits are set from the client, SQL
and the CLI and checked with clear errors. (Three processes against one limit:
test_worker_processes.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from kongflow import Client, InvalidJobError, JobSpec, RunningJob, Worker
from kongflow.cli import app
from kongflow.engine.rates import RateLimit
from tests.engine.test_worker_processes import most_starts_in_a_window


async def test_each_partition_has_its_own_window_and_other_queues_run_at_full_speed(
    client: Client,
) -> None:
    starts: dict[str | None, list[datetime]] = {}

    async def record(payload: Any, job: RunningJob) -> None:
        assert job.locked_at is not None
        starts.setdefault(job.queue_name, []).append(job.locked_at)

    await client.set_queue_limits({"api:*": 10})
    await client.set_rate_limits({"api:*": "3/500ms"})
    await client.add_jobs(
        [JobSpec("record", queue_name=f"api:{customer}") for customer in "ab" for _ in range(12)]
        + [JobSpec("record") for _ in range(30)]
    )
    async with Worker(
        client.pool, {"record": record}, schema=client.schema, concurrency=40, poll_interval=0.05
    ) as worker:
        await worker.drain()
    window = timedelta(milliseconds=500)
    a, b, free = sorted(starts["api:a"]), sorted(starts["api:b"]), sorted(starts[None])
    assert len(a) == len(b) == 12 and len(free) == 30
    assert most_starts_in_a_window(a, window) == most_starts_in_a_window(b, window) == 3
    assert b[0] < a[-1] and a[0] < b[-1]  # the customers' windows ran side by side
    assert free[-1] < a[3]  # the unlimited jobs did not wait for the limited ones' windows
    stats = {row["queue_name"]: row for row in await client.queue_stats()}
    assert (stats["api:a"]["rate_max"], stats["api:a"]["rate_per"]) == (3, window)


async def test_limits_are_set_removed_and_checked(client: Client) -> None:
    await client.add_job("t", queue_name="mail")
    await client.set_rate_limits({"mail": RateLimit(100, timedelta(minutes=1))})
    stats = {row["queue_name"]: row for row in await client.queue_stats()}
    assert (stats["mail"]["rate_max"], stats["mail"]["rate_per"]) == (100, timedelta(minutes=1))
    await client.set_rate_limits({"mail": None})
    stats = {row["queue_name"]: row for row in await client.queue_stats()}
    assert stats["mail"]["rate_max"] is None
    for bad, message in [
        ({"mail": "fast"}, r"rate_limits\['mail'\]: a rate limit looks like 100/min"),
        ({"mail": "0/s"}, "max_jobs must be at least 1"),
        ({"mail": "1/30d"}, "1 ms to 7 days"),
        ({"mail": 5}, "a RateLimit or a string"),
        ({"": "1/s"}, "keys are queue names or patterns"),
    ]:
        with pytest.raises(InvalidJobError, match=message):
            await client.set_rate_limits(bad)  # type: ignore[arg-type]


async def test_a_limit_set_in_sql_applies_to_queues_made_later(client: Client) -> None:
    async with client.pool.connection() as conn:
        await conn.execute(
            f'select "{client.schema}".set_rate_limits('
            """'{"reports:*": {"max_jobs": 2, "per": "1 hour"}}')"""
        )
    await client.add_job("t", queue_name="reports:daily")
    stats = {row["queue_name"]: row for row in await client.queue_stats()}
    assert (stats["reports:daily"]["rate_max"], stats["reports:daily"]["rate_per"]) == (
        2,
        timedelta(hours=1),
    )


def test_the_cli_sets_and_removes_a_limit(database_url: str, schema: str) -> None:
    env = {"DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    runner = CliRunner()
    done = runner.invoke(app, ["queues", "rate-limit", "emails", "100/min"], env=env)
    assert done.exit_code == 0 and "at most 100/min" in done.output, done.output
    bad = runner.invoke(app, ["queues", "rate-limit", "emails", "lots"], env=env)
    assert bad.exit_code == 1 and "a rate limit looks like" in bad.output
    removed = runner.invoke(app, ["queues", "rate-limit", "emails", "none"], env=env)
    assert removed.exit_code == 0 and "no rate limit" in removed.output
    tasks = ["worker", "--tasks", "kongflow.engine.benchmark:tasks"]
    worker = runner.invoke(app, [*tasks, "--rate-limit", "emails"], env=env)
    assert worker.exit_code == 1 and "--rate-limit takes NAME=RATE" in worker.output
    worker = runner.invoke(app, [*tasks, "--rate-limit", "emails=fast"], env=env)
    assert worker.exit_code == 1 and "--rate-limit emails=fast: a rate limit looks like" in (
        worker.output
    )
