"""`kongflow dashboard` on its own, over a schema with the engine's tables only: the engine's
pages, no jobs-service pages; beyond loopback it wants a token."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx

from kongflow import Client, Worker
from tests.support.helpers import free_port


async def noop(payload: object, job: object) -> None:
    pass


def start(database_url: str, schema: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kongflow", "dashboard", *args],
        env={**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_the_dashboard_alone_over_the_engine(database_url: str, schema: str) -> None:
    async with Client(database_url, schema=schema) as client:
        await client.migrate()
        await client.add_job("reports.build", {"month": 11}, queue_name="reports")
        async with Worker(client.pool, {"other.task": noop}, schema=schema):  # on the overview
            port = free_port()
            process = start(database_url, schema, "--port", str(port))
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    deadline = time.monotonic() + 30
                    while True:
                        try:
                            overview = await http.get("/")
                            break
                        except httpx.ConnectError:
                            assert process.poll() is None and time.monotonic() < deadline
                            await asyncio.sleep(0.2)
                    assert overview.status_code == 200
                    assert 'data-queue="reports"' in overview.text
                    assert (await http.get("/jobs?task=reports.build")).status_code == 200
                    assert (await http.get("/runs")).status_code == 404
            finally:
                process.send_signal(signal.SIGTERM)
                output, _ = process.communicate(timeout=30)
    assert "(engine; open (loopback))" in output


def test_beyond_loopback_it_wants_a_token(database_url: str, schema: str) -> None:
    process = start(database_url, schema, "--host", "0.0.0.0")
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "set --token" in output
