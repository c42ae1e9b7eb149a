"""`kongflow dev --demo` as a user runs it: a real process, stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.helpers import free_port


@pytest.mark.slow
def test_dev_runs_the_demo_to_success_serves_the_api_and_stops_on_ctrl_c(
    database_url: str, schema: str
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kongflow", "dev", "--demo", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        output = "".join(lines)
        assert "demo: run ended SUCCESS" in output
        assert "Hello, kongflow!" in output
        key = next(line.split()[-1] for line in lines if line.strip().startswith("API key"))
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.json() == {"status": "ok"}
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/jobs/count-words/test",
            json={"payload": {"text": "one two three"}},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 202, response.text
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    reader.join(timeout=5)
    assert code == 0, "".join(lines)


def test_the_banner_masks_the_database_password() -> None:
    from kongflow.cli.common import console
    from kongflow.cli.dev import _welcome
    from kongflow.service.environments import Environment

    env = Environment(
        *("env-id", "dev", "DEVELOPMENT", "tr_dev_" + "k" * 24, "p", "web", "Web"),
        *("o", "acme", "Acme"),
    )
    with console.capture() as captured:
        _welcome(
            "postgresql://kong:s3cret-pw@db.internal:5432/kongflow",
            env,
            "http://127.0.0.1:8030",
            "http://127.0.0.1:8031",
            "example",
        )
    output = captured.get()
    assert "s3cret-pw" not in output
    assert "postgresql://kong:***@db.internal:5432/kongflow" in output
