"""A whole jobs stack on 127.0.0.1 for end-to-end tests: the API under uvicorn, a worker, a
test endpoint built with the SDK (behind a switch that can answer EXECUTE_JOB itself), and a
webhook receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kongflow.api import BackgroundServer, create_app
from kongflow.dashboard import DashboardOptions
from kongflow.engine.tasks import FixedBackoff
from kongflow.sdk import IO, Context, Endpoint, event_trigger
from kongflow.service.environments import Environment
from kongflow.service.network import NetworkPolicy
from kongflow.service.runs import TERMINAL
from kongflow.service.service import JobsOptions, JobsService

ENDPOINT_SLUG = "test-app"


class Order(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    order_id: int
    plan: str = "free"


class Scripted:
    """ASGI wrapper: EXECUTE_JOB requests are counted, and answered from `answers` (status,
    body) while any are left, else by the wrapped endpoint."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[tuple[int, str]] = []
        self.executions = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"x-trigger-action", b"EXECUTE_JOB") in scope["headers"]:
            self.executions += 1
            if self.answers:
                status, body = self.answers.pop(0)
                await Response(body, status, media_type="application/json")(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass
class Receiver:
    """A webhook receiver that fails the first `failures` deliveries, then answers the next
    `big_answers` with 200 and a body of `big_answer_size` bytes."""

    failures: int = 0
    big_answers: int = 0
    big_answer_size: int = 256 * 1024
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    attempts: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.attempts += 1
            if self.attempts <= self.failures:
                return JSONResponse({"error": "not now"}, 503)
            if self.attempts <= self.failures + self.big_answers:
                return Response(b"x" * self.big_answer_size, 200)
            self.received.append((await request.body(), dict(request.headers)))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def test_endpoint(api_key: str, release: asyncio.Event) -> Endpoint:
    endpoint = Endpoint(id=ENDPOINT_SLUG, api_key=api_key)

    @endpoint.job(id="echo", name="Echo", version="1.0.0", trigger=event_trigger("test.echo"))
    async def echo(payload: Any, io: IO, ctx: Context) -> Any:
        return {"echo": payload, "isTest": ctx.is_test}

    @endpoint.job(id="boom", name="Boom", version="1.0.0", trigger=event_trigger("test.boom"))
    async def boom(payload: Any, io: IO, ctx: Context) -> Any:
        raise RuntimeError("the job blew up")

    @endpoint.job(id="slow", name="Slow", version="1.0.0", trigger=event_trigger("test.slow"))
    async def slow(payload: Any, io: IO, ctx: Context) -> Any:
        await asyncio.sleep(2)

    @endpoint.job(id="gate", name="Gate", version="1.0.0", trigger=event_trigger("test.gate"))
    async def gate(payload: Any, io: IO, ctx: Context) -> Any:
        await release.wait()
        return {"released": True}

    @endpoint.job(id="nul", name="Nul", version="1.0.0", trigger=event_trigger("test.nul"))
    async def nul(payload: Any, io: IO, ctx: Context) -> Any:
        return {"text": "a\u0000b"}  # valid JSON that PostgreSQL's jsonb refuses

    @endpoint.job(
        id="order",
        name="Order",
        version="1.0.0",
        trigger=event_trigger("order.placed", schema=Order),
    )
    async def order(payload: Order, io: IO, ctx: Context) -> Any:
        return {"order": payload.order_id}

    @endpoint.job(
        id="pro-order",
        name="Pro order",
        version="1.0.0",
        trigger=event_trigger("order.placed", schema=Order, filter={"plan": ["pro"]}),
    )
    async def pro_order(payload: Order, io: IO, ctx: Context) -> Any:
        return {"pro": payload.order_id}

    return endpoint


@dataclass
class Stack:
    jobs: JobsService
    env: Environment
    api: httpx.AsyncClient
    endpoint: Scripted
    endpoint_url: str
    receiver: Receiver
    receiver_url: str
    release: asyncio.Event

    async def run(self, run_id: str, timeout: float = 20) -> dict[str, Any]:
        """The run once it is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            response = await self.api.get(f"/api/v1/runs/{run_id}")
            assert response.status_code == 200, response.text
            run: dict[str, Any] = response.json()
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s")
            await asyncio.sleep(0.05)

    async def status(self, run_id: str) -> str:
        response = await self.api.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    async def executing(self, run_id: str) -> None:
        """Wait until the run is EXECUTING (its endpoint has the request)."""

        async def executing() -> bool:
            return await self.status(run_id) == "EXECUTING"

        await wait_until(executing)

    async def statuses(self, run_id: str) -> list[str]:
        response = await self.api.get(f"/api/v1/runs/{run_id}/history")
        assert response.status_code == 200, response.text
        return [s["status"] for s in response.json()["statuses"]]

    async def runs_of_event(self, event_id: str) -> list[tuple[str, str]]:
        """(job slug, status) of every run the event started, by slug."""
        schema = self.jobs.client.schema
        async with self.jobs.client.pool.connection() as conn:
            cur = await conn.execute(
                f'select j.slug, r.status from "{schema}".job_runs r'  # type: ignore[arg-type]
                f' join "{schema}".job_definitions j on j.id = r.job_id'
                f' join "{schema}".event_records e on e.id = r.event_id'
                " where e.event_id = %s order by j.slug",
                (event_id,),
            )
            return [(str(slug), str(status)) for slug, status in await cur.fetchall()]

    @asynccontextmanager
    async def no_worker(self) -> AsyncIterator[None]:
        """The service's worker stopped meanwhile (runs stay QUEUED), and started again after."""
        assert self.jobs.queue.worker is not None
        await self.jobs.queue.worker.stop()
        self.jobs.queue.worker = None
        try:
            yield
        finally:
            await self.jobs.queue.start()

    async def test(self, job: str, payload: Any = None) -> str:
        body = {} if payload is None else {"payload": payload}
        response = await self.api.post(f"/api/v1/jobs/{job}/test", json=body)
        assert response.status_code == 202, response.text
        run_id: str = response.json()["runId"]
        return run_id


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def jobs_stack(
    database_url: str,
    schema: str,
    *,
    dashboard: DashboardOptions | None = None,
    **options: Any,
) -> AsyncIterator[Stack]:
    """Everything up, the test endpoint registered and indexed, the dashboard at /dashboard if
    `dashboard` is given. The service runs under the development network policy (everything
    here is on 127.0.0.1) unless `network` is given."""
    defaults: dict[str, Any] = {
        "network": NetworkPolicy.dev(),
        "request_timeout": 4.0,  # a gated job waits while a test works; under 5 s: no chunk limit
        "execution_attempts": 3,
        "execution_retry": FixedBackoff(0.1),
        "webhook_attempts": 5,
        "webhook_retry": FixedBackoff(0.1),
    }
    async with AsyncExitStack() as stack:
        jobs = JobsService(
            database_url,
            schema=schema,
            options=JobsOptions(**(defaults | options)),
            concurrency=20,
            poll_interval=0.05,
        )
        stack.push_async_callback(jobs.close, 5)
        await jobs.start()
        env = await jobs.environments.ensure("acme", "web")
        release = asyncio.Event()
        scripted = Scripted(test_endpoint(env.api_key, release).app)
        endpoint_server = await stack.enter_async_context(BackgroundServer(scripted))
        receiver = Receiver()
        receiver_server = await stack.enter_async_context(BackgroundServer(receiver.app()))
        api_server = await stack.enter_async_context(BackgroundServer(create_app(jobs, dashboard)))
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                base_url=api_server.url,
                headers={"Authorization": f"Bearer {env.api_key}"},
                timeout=30,
            )
        )
        stack.callback(release.set)  # lets a gated job finish before the servers stop
        response = await api.post(
            "/api/v1/endpoints", json={"slug": ENDPOINT_SLUG, "url": endpoint_server.url}
        )
        assert response.status_code == 200, response.text
        result = Stack(
            jobs,
            env,
            api,
            scripted,
            endpoint_server.url,
            receiver,
            receiver_server.url + "/hook",
            release,
        )

        async def indexed() -> bool:
            async with jobs.client.pool.connection() as conn:
                cur = await conn.execute(
                    f'select count(*) from "{schema}".job_versions'  # type: ignore[arg-type]
                )
                row = await cur.fetchone()
            return row is not None and row[0] == 7

        await wait_until(indexed)
        yield result
