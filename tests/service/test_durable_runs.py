"""Durable runs across what breaks, with trigger.dev's real Node SDK (and kongflow's Python
SDK) as the endpoint: an io.wait that outlives the kongflow that started it, a worker process
SIGKILLed in the middle of a resumed run, and an interval trigger served by two workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kongflow.api import BackgroundServer, create_app
from kongflow.sdk import IO, Context, Endpoint, event_trigger
from kongflow.service.environments import Environment
from kongflow.service.network import NetworkPolicy
from kongflow.service.runs import TERMINAL
from kongflow.service.service import JobsOptions, JobsService
from tests.support.helpers import free_port
from tests.support.jobs_stack import wait_until
from tests.support.node_sdk import NodeSdk, install

ENDPOINT_ID = "node-app"


@pytest.fixture(scope="module")
def node_root() -> Path:
    return install()


def service(database_url: str, schema: str) -> JobsService:
    options = JobsOptions(network=NetworkPolicy.dev(), request_timeout=30.0)
    return JobsService(database_url, schema=schema, options=options, poll_interval=0.05, lease=3.0)


@dataclass
class Kongflow:
    """kongflow's API on a fixed port (so the endpoint's SDK finds it again after a restart),
    and the service behind it."""

    jobs: JobsService
    server: BackgroundServer
    api: httpx.AsyncClient
    stopped: bool = False

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.api.aclose()
        await self.server.stop()
        await self.jobs.close(5)


@asynccontextmanager
async def kongflow(
    database_url: str, schema: str, port: int, *, worker: bool = True
) -> AsyncIterator[tuple[Kongflow, Environment]]:
    jobs = service(database_url, schema)
    await (jobs.start() if worker else jobs.open())
    env = await jobs.environments.ensure("acme", "web")
    server = await BackgroundServer(create_app(jobs), port=port).start()
    api = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {env.api_key}"}, timeout=30
    )
    running = Kongflow(jobs, server, api)
    try:
        yield running, env
    finally:
        await running.stop()


async def register(api: httpx.AsyncClient, url: str) -> None:
    response = await api.post("/api/v1/endpoints", json={"url": url, "name": ENDPOINT_ID})
    assert response.status_code == 200, response.text


async def indexed(jobs: JobsService, slug: str) -> None:
    async def listed() -> bool:
        return await scalar(jobs, "select count(*) from {s}.job_definitions where slug = %s", slug)

    await wait_until(listed, timeout=20)


async def scalar(jobs: JobsService, query: str, *args: Any) -> Any:
    async with jobs.client.pool.connection() as conn:
        cur = await conn.execute(query.format(s=f'"{jobs.client.schema}"'), args)  # type: ignore[arg-type]
        row = await cur.fetchone()
    return row[0] if row else None


async def run_status(api: httpx.AsyncClient, run_id: str) -> str:
    return str((await api.get(f"/api/v1/runs/{run_id}")).json()["status"])


async def finished(api: httpx.AsyncClient, run_id: str, timeout: float = 40) -> dict[str, Any]:
    async def done() -> bool:
        return await run_status(api, run_id) in TERMINAL

    await wait_until(done, timeout=timeout)
    run: dict[str, Any] = (await api.get(f"/api/v1/runs/{run_id}")).json()
    return run


async def test_io_wait_survives_kongflow_restarting(
    database_url: str, schema: str, node_root: Path
) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        first, env = await stack.enter_async_context(kongflow(database_url, schema, port))
        node = NodeSdk(node_root, first.server.url, env.api_key, ENDPOINT_ID)
        await register(first.api, await stack.enter_async_context(node.endpoint()))
        await indexed(first.jobs, "node-wait")
        test = await first.api.post("/api/v1/jobs/node-wait/test", json={"payload": {"seconds": 4}})
        run_id = test.json()["runId"]

        async def waiting() -> bool:
            return await run_status(first.api, run_id) == "WAITING_TO_CONTINUE"

        await wait_until(waiting, timeout=20)
        await first.stop()  # kongflow goes away in the middle of the wait: API and worker
        await asyncio.sleep(1)
        async with kongflow(database_url, schema, port) as (second, _):
            run = await finished(second.api, run_id)
            assert run["status"] == "SUCCESS", run["output"]
            assert run["output"]["waitedMs"] >= 4000

            async def notified() -> bool:
                return (await node.calls())[run_id].get("onSuccess") == 1

            await wait_until(notified, timeout=20)
            assert (await node.calls())[run_id] == {"before": 1, "after": 1, "onSuccess": 1}


def jobs_worker(database_url: str, schema: str) -> subprocess.Popen[str]:
    """`kongflow serve --no-api`: the jobs service's worker as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "kongflow", "serve", "--no-api", "--lease", "3"],
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "KONGFLOW_SCHEMA": schema,
            "KONGFLOW_ALLOW_NETWORKS": "127.0.0.0/8",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
async def test_a_worker_killed_during_a_resumed_run_repeats_no_completed_task(
    database_url: str, schema: str, node_root: Path
) -> None:
    port = free_port()
    workers: list[subprocess.Popen[str]] = []
    try:
        async with AsyncExitStack() as stack:
            # The API here; the worker in processes of its own.
            app, env = await stack.enter_async_context(
                kongflow(database_url, schema, port, worker=False)
            )
            workers.append(jobs_worker(database_url, schema))
            node = NodeSdk(node_root, app.server.url, env.api_key, ENDPOINT_ID)
            await register(app.api, await stack.enter_async_context(node.endpoint()))
            await indexed(app.jobs, "node-resumed")
            # The endpoint goes on serving the killed worker's request; the slow step outlasts
            # the 3 s lease well, so the run's next execution arrives while that step still
            # runs, never in the instant the old request moves on to the last step.
            test = await app.api.post(
                "/api/v1/jobs/node-resumed/test", json={"payload": {"slowMs": 8000}}
            )
            run_id = test.json()["runId"]

            async def slow_step_running() -> bool:
                return (await node.calls()).get(run_id, {}).get("slow") == 1

            await wait_until(slow_step_running, timeout=30)  # after the wait: a resumed run
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            workers.append(jobs_worker(database_url, schema))
            run = await finished(app.api, run_id, timeout=60)
            assert run["status"] == "SUCCESS", run["output"]
            calls = (await node.calls())[run_id]
            # Nothing that had completed ran again; the slow step was still running when its
            # worker died, so it may have been run a second time.
            assert (calls["first"], calls["last"]) == (1, 1)
            assert calls["slow"] in (1, 2)
            tasks = (await app.api.get(f"/api/v2/runs/{run_id}")).json()["tasks"]
            assert [t["status"] for t in tasks] == ["COMPLETED"] * 4
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.communicate(timeout=30)


async def test_an_interval_trigger_fires_once_per_tick_with_two_workers(
    database_url: str, schema: str, node_root: Path
) -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        app, env = await stack.enter_async_context(kongflow(database_url, schema, port))
        other = service(database_url, schema)  # a second worker on the same database
        await other.start()
        stack.push_async_callback(other.close, 5)
        node = NodeSdk(
            node_root, app.server.url, env.api_key, ENDPOINT_ID, {"INTERVAL_SECONDS": "2"}
        )
        await register(app.api, await stack.enter_async_context(node.endpoint()))
        await indexed(app.jobs, "node-interval")

        async def ran(n: int) -> bool:
            runs = await scalar(
                app.jobs,
                "select count(*) from {s}.job_runs r join {s}.job_definitions j"
                " on j.id = r.job_id where j.slug = 'node-interval' and r.status = 'SUCCESS'",
            )
            return bool(runs >= n)

        await wait_until(lambda: ran(3), timeout=30)
        # one event per tick, one run per event, the ticks 2 s apart
        per_tick = await scalar(
            app.jobs,
            "select array_agg(n order by ts) from (select e.payload->>'ts' as ts, count(r.id) n"
            " from {s}.event_records e left join {s}.job_runs r on r.event_id = e.id"
            " where e.name = 'trigger.scheduled' group by e.id, e.payload) t",
        )
        assert set(per_tick) == {1}
        gaps = await scalar(
            app.jobs,
            "select array_agg(gap) from (select extract(epoch from (payload->>'ts')::timestamptz"
            " - lag((payload->>'ts')::timestamptz) over (order by payload->>'ts')) as gap"
            " from {s}.event_records where name = 'trigger.scheduled') t where gap is not null",
        )
        assert all(abs(float(gap) - 2) < 0.01 for gap in gaps), gaps

        # Re-indexed without the job (the endpoint now defines no interval): it stops.
        plain = NodeSdk(node_root, app.server.url, env.api_key, ENDPOINT_ID)
        await register(app.api, await stack.enter_async_context(plain.endpoint()))

        async def stopped() -> bool:
            return not await scalar(app.jobs, "select bool_or(active) from {s}.schedules")

        await wait_until(stopped, timeout=20)
        before = await scalar(
            app.jobs, "select count(*) from {s}.event_records where name = 'trigger.scheduled'"
        )
        await asyncio.sleep(4.5)
        after = await scalar(
            app.jobs, "select count(*) from {s}.event_records where name = 'trigger.scheduled'"
        )
        assert after == before


async def test_a_python_io_wait_survives_kongflow_restarting(
    database_url: str, schema: str
) -> None:
    port = free_port()
    steps: list[str] = []
    async with AsyncExitStack() as stack:
        first, env = await stack.enter_async_context(kongflow(database_url, schema, port))
        endpoint = Endpoint(id="py-app", api_key=env.api_key, api_url=first.server.url)

        @endpoint.job(id="py-wait", name="Wait", version="1", trigger=event_trigger("py.wait"))
        async def wait(payload: Any, io: IO, ctx: Context) -> dict[str, float]:
            async def step(task: Any, name: str) -> float:
                steps.append(name)
                return time.time()

            before = await io.run_task("before", lambda task: step(task, "before"))
            await io.wait("pause", 3)
            after = await io.run_task("after", lambda task: step(task, "after"))
            return {"waited": after - before}

        server = await stack.enter_async_context(BackgroundServer(endpoint.app))
        response = await first.api.post(
            "/api/v1/endpoints", json={"url": server.url, "name": "py-app"}
        )
        assert response.status_code == 200, response.text
        await indexed(first.jobs, "py-wait")
        test = await first.api.post("/api/v1/jobs/py-wait/test", json={})
        run_id = test.json()["runId"]

        async def waiting() -> bool:
            return await run_status(first.api, run_id) == "WAITING_TO_CONTINUE"

        await wait_until(waiting, timeout=20)
        await first.stop()
        await asyncio.sleep(1)
        async with kongflow(database_url, schema, port) as (second, _):
            run = await finished(second.api, run_id)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"]["waited"] >= 3
    assert steps == ["before", "after"]
