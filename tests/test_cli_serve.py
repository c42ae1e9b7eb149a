"""`kongflow serve` as deployed: API and worker processes apart, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psycopg
import pytest

from tests.test_cli_dev import free_port


def start(database_url: str, schema: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kongflow", "serve", *args],
        env={**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema},
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
    assert "worker" in worker_output and "API" not in worker_output.split("serving:")[1]


def test_serving_nothing_is_refused(database_url: str, schema: str) -> None:
    process = start(database_url, schema, "--no-api", "--no-worker")
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "nothing to run" in output
