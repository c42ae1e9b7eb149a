"""TestJob: event, run and execution in one transaction, run numbers under concurrency, status
history; and startRun, for the runs an earlier kongflow created PENDING."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kongflow import Client, RunningJob
from kongflow.protocol import JobMetadata
from kongflow.service import Environment, EnvironmentService
from kongflow.service.catalog import TRIGGER_CATALOG, StartRun
from kongflow.service.database import Database
from kongflow.service.outbound import UrlRefused
from kongflow.service.registry import Registry
from kongflow.service.runs import JobNotFoundError, RunService, execution_key
from kongflow.service.schema import ALL_COMPONENTS
from kongflow.typed import WorkerQueue
from tests.support.helpers import count_jobs


class Setup:
    def __init__(self, client: Client, env: Environment, runs: RunService) -> None:
        self.client, self.env, self.runs = client, env, runs
        self.executions: list[str] = []


@pytest.fixture
async def setup(database_url: str, schema: str) -> AsyncIterator[Setup]:
    async with Client(database_url, schema=schema, components=ALL_COMPONENTS) as client:
        env = await EnvironmentService(client).ensure("acme", "web")
        registry = Registry(schema)
        async with client.pool.connection() as conn, conn.transaction():
            endpoint = (
                await registry.register_endpoint(conn, env, "my-app", "http://127.0.0.1:1")
            ).id
            await registry.register_job(
                conn,
                env,
                endpoint,
                JobMetadata.model_validate(
                    {
                        "id": "send-welcome",
                        "name": "Send welcome",
                        "version": "1.0.0",
                        "event": {"name": "user.created"},
                    }
                ),
            )
        holder: dict[str, Any] = {}

        async def execute(payload: Any, job: RunningJob) -> None:
            holder["setup"].executions.append(payload.id)

        async def finished(payload: Any, job: RunningJob) -> None:
            pass

        queue = WorkerQueue(
            TRIGGER_CATALOG,
            client=client,
            poll_interval=0.05,
            handlers={"performRunExecution": execute, "runFinished": finished},
        )
        runs = RunService(queue, Database(client))
        queue.handlers.update(runs.handlers())
        result = Setup(client, env, runs)
        holder["setup"] = result
        yield result
        await queue.stop()


async def test_test_job_creates_event_and_queued_run_with_its_execution_together(
    setup: Setup,
) -> None:
    queued = await setup.runs.test_job(setup.env, "send-welcome", {"userId": 7})
    assert queued.status == "queued"
    assert queued.event_id.startswith("test:user.created:")
    run = await setup.runs.get_run(setup.env, queued.run_id)
    assert run is not None
    assert (run.status, run.is_test, run.number) == ("QUEUED", True, 1)
    assert run.queued_at is not None
    assert [s.status for s in run.statuses] == ["PENDING", "QUEUED"]
    assert await count_jobs(setup.client, "task_identifier = 'performRunExecution'") == 1
    assert await count_jobs(setup.client, "task_identifier = 'startRun'") == 0


async def test_test_job_for_an_unknown_job_leaves_nothing(setup: Setup) -> None:
    with pytest.raises(JobNotFoundError, match="nope"):
        await setup.runs.test_job(setup.env, "nope")
    async with setup.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select (select count(*) from "{setup.client.schema}".event_records),'  # type: ignore[arg-type]
            f' (select count(*) from "{setup.client.schema}".job_runs)'
        )
        assert await cur.fetchone() == (0, 0)
    assert await count_jobs(setup.client) == 0


async def test_concurrent_tests_number_runs_and_queue_their_executions(setup: Setup) -> None:
    queued = await asyncio.gather(
        *(setup.runs.test_job(setup.env, "send-welcome") for _ in range(20))
    )
    numbers = []
    for q in queued:
        run = await setup.runs.get_run(setup.env, q.run_id)
        assert run is not None
        assert run.status == "QUEUED"
        assert [s.status for s in run.statuses] == ["PENDING", "QUEUED"]
        numbers.append(run.number)
    assert sorted(numbers) == list(range(1, 21))
    await setup.runs.queue.start()
    assert setup.runs.queue.worker is not None
    await setup.runs.queue.worker.drain()
    assert sorted(setup.executions) == sorted(q.run_id for q in queued)


async def test_start_run_queues_a_run_an_earlier_kongflow_created_pending(setup: Setup) -> None:
    queued = await setup.runs.test_job(setup.env, "send-welcome")
    s = f'"{setup.client.schema}"'
    async with setup.client.pool.connection() as conn:  # the run as it was created before
        await conn.execute(
            f"update {s}.job_runs set status = 'PENDING', number = null, queued_at = null"  # type: ignore[arg-type]
            " where id = %s",
            (queued.run_id,),
        )
        await conn.execute(
            f"delete from {s}.run_status_history where run_id = %s and status = 'QUEUED'",  # type: ignore[arg-type]
            (queued.run_id,),
        )
    assert await setup.client.remove_job(execution_key(queued.run_id)) is not None
    await setup.runs.queue.open()
    await setup.runs.queue.enqueue(StartRun(id=queued.run_id))
    await setup.runs.queue.start()
    assert setup.runs.queue.worker is not None
    await setup.runs.queue.worker.drain()
    run = await setup.runs.get_run(setup.env, queued.run_id)
    assert run is not None
    assert (run.status, run.number) == ("QUEUED", 2)
    assert [s.status for s in run.statuses] == ["PENDING", "QUEUED"]
    assert setup.executions == [queued.run_id]


async def test_runs_of_another_environment_are_not_visible(setup: Setup) -> None:
    queued = await setup.runs.test_job(setup.env, "send-welcome")
    other = await EnvironmentService(setup.client).ensure("other-org", "web")
    assert await setup.runs.get_run(other, queued.run_id) is None


async def test_cancel_removes_the_pending_execution_and_is_final(setup: Setup) -> None:
    queued = await setup.runs.test_job(setup.env, "send-welcome")
    assert await count_jobs(setup.client, "task_identifier = 'performRunExecution'") == 1

    cancelled = await setup.runs.cancel_run(setup.env, queued.run_id)
    assert cancelled is not None
    assert cancelled.status == "CANCELED"
    assert cancelled.completed_at is not None
    assert [s.status for s in cancelled.statuses] == ["PENDING", "QUEUED", "CANCELED"]
    assert await count_jobs(setup.client, "task_identifier = 'performRunExecution'") == 0

    again = await setup.runs.cancel_run(setup.env, queued.run_id)  # terminal: unchanged
    assert again is not None
    assert [s.status for s in again.statuses] == ["PENDING", "QUEUED", "CANCELED"]
    other = await EnvironmentService(setup.client).ensure("elsewhere", "web")
    assert await setup.runs.cancel_run(other, queued.run_id) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://user:pw@93.184.216.34/hook", "credentials"),
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:9/hook", "is a loopback address"),
        ("http://169.254.169.254/latest", "is a link-local address"),
        ("http://10.1.2.3/hook", "is a private address"),
        ("gopher://93.184.216.34/", "only http and https"),
    ],
)
async def test_invoke_refuses_a_callback_url_it_may_not_call_and_stores_nothing(
    setup: Setup, url: str, reason: str
) -> None:
    with pytest.raises(UrlRefused, match=reason) as refused:
        await setup.runs.invoke(setup.env, "send-welcome", callback_url=url)
    assert isinstance(refused.value, ValueError)  # the API answers 400
    assert "pw" not in str(refused.value)
    async with setup.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select (select count(*) from "{setup.client.schema}".event_records),'  # type: ignore[arg-type]
            f' (select count(*) from "{setup.client.schema}".job_runs)'
        )
        assert await cur.fetchone() == (0, 0)
    assert await count_jobs(setup.client) == 0


async def test_invoke_takes_a_public_callback_url(setup: Setup) -> None:
    queued, created = await setup.runs.invoke(
        setup.env, "send-welcome", callback_url="https://93.184.216.34/hook"
    )
    assert created
    async with setup.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select url from "{setup.client.schema}".run_subscriptions'  # type: ignore[arg-type]
            " where run_id = %s",
            (queued.run_id,),
        )
        assert {row[0] for row in await cur.fetchall()} == {"https://93.184.216.34/hook"}
