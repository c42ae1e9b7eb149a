"""Test helpers for applications that use kongflow, as a pytest plugin (installed with kongflow,
loaded by pytest on its own): a database, a migrated schema of its own per test, and helpers to
see what was enqueued and to run it.

    async def test_signup_sends_the_welcome_mail(kongflow_client: Client) -> None:
        await signup(kongflow_client, "a@example.com")          # your code, which enqueues
        job = await assert_enqueued(kongflow_client, "email.send", {"to": "a@example.com"})
        await run_until_idle(kongflow_client, {"email.send": send_email})

`kongflow_database_url` is DATABASE_URL, or a throwaway embedded PostgreSQL for the session.
`kongflow_schema` (a sync fixture: no async plugin needed) is a migrated schema dropped after
the test; `kongflow_client` (async: needs pytest-asyncio or anyio) an open Client on it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kongflow import embedded
from kongflow.engine.client import Client
from kongflow.engine.models import Job
from kongflow.engine.tasks import Handler, Task
from kongflow.engine.worker import Worker


@pytest.fixture(scope="session")
def kongflow_database_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="kongflow-test-") as tmp:
        yield embedded.start_temporary(Path(tmp) / "pgdata")


@pytest.fixture
def kongflow_schema(kongflow_database_url: str) -> Iterator[str]:
    """A schema of this test's own, with kongflow's tables; dropped afterwards."""
    name = f"kf_test_{secrets.token_hex(6)}"

    async def migrate() -> None:
        async with Client(kongflow_database_url, schema=name) as client:
            await client.migrate()

    asyncio.run(migrate())
    yield name
    with psycopg.connect(kongflow_database_url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{name}" cascade')


@pytest.fixture
async def kongflow_client(
    kongflow_database_url: str, kongflow_schema: str
) -> AsyncIterator[Client]:
    async with Client(kongflow_database_url, schema=kongflow_schema) as client:
        yield client


async def enqueued(client: Client, task: str | None = None) -> list[Job]:
    """The jobs waiting to run (or scheduled), newest first, of one task or of all."""
    jobs = await client.list_jobs(task=task, limit=1000)
    return [job for job in jobs if job.state in ("available", "scheduled")]


async def assert_enqueued(
    client: Client, task: str, payload: Mapping[str, Any] | None = None, *, queue: str | None = None
) -> Job:
    """The newest waiting job of `task` whose payload has these keys and values (and in this
    queue, if given); an AssertionError listing what is waiting otherwise."""
    waiting = await enqueued(client)
    for job in waiting:
        if job.task_identifier != task or (queue is not None and job.queue_name != queue):
            continue
        if payload is None or (
            isinstance(job.payload, dict)
            and all(job.payload.get(k) == v for k, v in payload.items())
        ):
            return job
    seen = [(job.task_identifier, job.queue_name, job.payload) for job in waiting[:20]]
    raise AssertionError(
        f"no waiting {task!r} job matches {dict(payload or {})!r}; waiting: {seen}"
    )


async def run_until_idle(
    client: Client,
    tasks: Mapping[str, Handler | Task],
    *,
    timeout: float = 30.0,
    **worker_options: Any,
) -> None:
    """Run `tasks` with a worker until none of their jobs is ready (jobs they enqueue included),
    then stop it. A job that fails is retried by the worker as usual; a TimeoutError if the
    work does not settle within `timeout` seconds."""
    worker_options.setdefault("poll_interval", 0.05)
    async with Worker(client.pool, tasks, schema=client.schema, **worker_options) as worker:
        await asyncio.wait_for(worker.drain(), timeout)
