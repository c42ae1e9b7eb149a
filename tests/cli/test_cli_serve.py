"""`kongflow serve` as deployed: API and worker processes apart, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from kongflow import Client
from kongflow.api import BackgroundServer
from kongflow.sdk.example import example_endpoint
from kongflow.service import EnvironmentService
from kongflow.service.schema import ALL_COMPONENTS
from tests.support.helpers import free_port


def start(
    database_url: str, schema: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kongflow", "serve", *args],
        env={**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_api_and_worker_processes_apart(database_url: str, schema: str) -> None:
    port = free_port()
    api = start(database_url, schema, "--no-worker", "--port", str(port))
    worker = start(database_url, schema, "--no-api")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert api.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        denied = httpx.post(f"http://127.0.0.1:{port}/api/v1/jobs/x/test")
        assert denied.status_code == 401
        board = httpx.get(f"http://127.0.0.1:{port}/dashboard/jobs")  # behind a login
        assert (board.status_code, board.headers["location"]) == (303, "/dashboard/login")
        with psycopg.connect(database_url, autocommit=True) as conn:
            while True:  # the worker process registers itself
                row = conn.execute(
                    f'select count(*) from "{schema}"._workers'  # type: ignore[arg-type]
                ).fetchone()
                if row and row[0] == 1:
                    break
                assert worker.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        api_output = stop(api)
        worker_output = stop(worker)
    assert f"API on http://127.0.0.1:{port}" in api_output
    assert f"dashboard on http://127.0.0.1:{port}/dashboard" in api_output
    assert "worker" in worker_output and "API" not in worker_output.split("serving:")[1]


def test_serving_nothing_is_refused(database_url: str, schema: str) -> None:
    process = start(database_url, schema, "--no-api", "--no-worker")
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "nothing to run" in output


@pytest.mark.parametrize(
    ("args", "env", "bad"),
    [
        (["--allow-network", "10.0.0.0/8", "--allow-network", "nope"], {}, "'nope'"),
        ([], {"KONGFLOW_ALLOW_NETWORKS": "10.0.0.0/8,10.0.0.1/8"}, "did you mean 10.0.0.0/8"),
    ],
)
def test_a_bad_allowed_network_is_refused_before_starting(
    database_url: str, schema: str, args: list[str], env: dict[str, str], bad: str
) -> None:
    process = start(database_url, schema, *args, env=env)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "--allow-network / KONGFLOW_ALLOW_NETWORKS" in output and bad in output


@pytest.mark.slow
async def test_serve_calls_only_the_networks_it_is_told_to(database_url: str, schema: str) -> None:
    port = free_port()
    api = start(
        database_url,
        schema,
        "--no-worker",
        "--port",
        str(port),
        env={"KONGFLOW_ALLOW_NETWORKS": "127.0.0.1/32, 10.0.0.0/8"},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await http.get("/health")
                    break
                except httpx.ConnectError:
                    assert api.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            async with Client(database_url, schema=schema, components=ALL_COMPONENTS) as client:
                env = await EnvironmentService(client).ensure()
            endpoint = example_endpoint(env.api_key)
            headers = {"Authorization": f"Bearer {env.api_key}"}
            async with BackgroundServer(endpoint.app) as server:
                allowed = await http.post(
                    "/api/v1/endpoints",
                    json={"slug": endpoint.id, "url": server.url},
                    headers=headers,
                )
                assert allowed.status_code == 200, allowed.text
                refused = await http.post(
                    "/api/v1/endpoints",
                    json={"slug": endpoint.id, "url": f"http://[::1]:{server.port}"},
                    headers=headers,
                )
                assert refused.status_code == 400, refused.text
                assert "::1 is a loopback address" in refused.json()["error"]
    finally:
        output = stop(api)
    assert "outbound calls to endpoints and callbacks: public addresses and 127.0.0.1/32" in output
