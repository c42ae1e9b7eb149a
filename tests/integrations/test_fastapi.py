"""The FastAPI lifespan: the client is open while the app runs, a route enqueues through it,
and the worker the lifespan runs takes the job; a route without the lifespan says what is
missing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from kongflow import RunningJob
from kongflow.integrations.fastapi import KongflowClient, kongflow_lifespan
from tests.support.jobs_stack import wait_until


async def test_a_route_enqueues_and_the_apps_worker_runs_it(database_url: str, schema: str) -> None:
    sent: list[str] = []
    done = asyncio.Event()

    async def send_email(payload: dict[str, str], job: RunningJob) -> None:
        sent.append(payload["to"])
        done.set()

    app = FastAPI(
        lifespan=kongflow_lifespan(
            database_url, schema=schema, tasks={"email.send": send_email}, poll_interval=0.05
        )
    )

    @app.post("/signup")
    async def signup(client: KongflowClient) -> dict[str, int]:
        job = await client.add_job("email.send", {"to": "a@example.com"})
        return {"job": job.id}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answer = await http.post("/signup")
        assert answer.status_code == 200
        await asyncio.wait_for(done.wait(), 10)
        client = app.state.kongflow

        async def completed() -> bool:
            job = await client.get_job(answer.json()["job"])
            return job is not None and job.state == "completed"

        await wait_until(completed)
    assert sent == ["a@example.com"]
    assert not client.is_open  # closed with the app


async def test_without_the_lifespan_the_route_says_what_is_missing() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(client: KongflowClient) -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        with pytest.raises(RuntimeError, match="kongflow_lifespan"):
            await http.get("/")
