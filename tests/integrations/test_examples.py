"""The example applications in examples/, run as a user runs them: the FastAPI app under uvicorn,
the trigger.dev Node endpoint under node against kongflow's jobs service. (The Django shop is
tests/integrations/test_django.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.jobs_stack import Stack, jobs_stack, wait_until
from tests.support.node_sdk import EXAMPLE, SOURCE, install

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fastapi_app(app_database: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=EXAMPLES / "fastapi",
            env={**os.environ, "DATABASE_URL": app_database},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)
    assert "Application shutdown complete" in log.read_text()


def test_the_fastapi_example_signs_up_and_its_worker_sends_the_welcome(fastapi_app: str) -> None:
    signed = httpx.post(f"{fastapi_app}/signups", json={"email": "ada@example.com"})
    assert signed.status_code == 201, signed.text
    job_id = signed.json()["job"]
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{fastapi_app}/jobs/{job_id}").json())["state"] != "completed":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["result"] == {"sent_to": "ada@example.com"}
    bad = httpx.post(f"{fastapi_app}/signups", json={"email": "not an address"})
    assert bad.status_code == 422
    assert httpx.get(f"{fastapi_app}/jobs/999999").status_code == 404


def test_the_node_example_declares_the_sdk_the_protocol_tests_use() -> None:
    example = json.loads((EXAMPLE.parent / "package.json").read_text())["dependencies"]
    tested = json.loads((SOURCE / "package.json").read_text())["dependencies"]
    assert example == tested


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema, request_timeout=30.0) as stack:
        yield stack


async def test_the_node_example_endpoint_charges_an_order_on_kongflow(stack: Stack) -> None:
    root = await asyncio.to_thread(install)
    env = {
        **os.environ,
        "TRIGGER_API_URL": str(stack.api.base_url).rstrip("/"),
        "TRIGGER_API_KEY": stack.env.api_key,
        "PORT": "0",
    }
    node = await asyncio.create_subprocess_exec(
        "node", "example-server.mjs", cwd=root, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert node.stdout is not None
        line = (await asyncio.wait_for(node.stdout.readline(), 30)).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url is not None, line
        registered = await stack.api.post("/api/v1/endpoints", json={"slug": "shop", "url": url[0]})
        assert registered.status_code == 200, registered.text

        order = {"orderId": 42, "total": 1999}
        tested: list[str] = []

        async def indexed_and_tested() -> bool:  # 404 until the endpoint is indexed
            answer = await stack.api.post("/api/v1/jobs/charge-order/test", json={"payload": order})
            if answer.status_code == 202:
                tested.append(answer.json()["runId"])
            return bool(tested)

        await wait_until(indexed_and_tested, timeout=20)
        run = await stack.run(tested[0], timeout=30)
        assert (run["status"], run["output"]) == (
            "SUCCESS",
            {"orderId": 42, "chargeId": "ch_42", "amount": 1999},
        )
        detail = (await stack.api.get(f"/api/v2/runs/{tested[0]}")).json()
        assert [(t["name"], t["displayKey"], t["status"]) for t in detail["tasks"]] == [
            ("Task", "charge-card", "COMPLETED"),
            ("log", None, "COMPLETED"),
            ("wait", "settle", "COMPLETED"),
        ]
        sent = await stack.api.post(
            "/api/v1/events", json={"event": {"name": "order.placed", "payload": order}}
        )
        assert sent.status_code == 200, sent.text

        async def ran() -> bool:  # the stack's own Python endpoint has an order.placed job too
            return ("charge-order", "SUCCESS") in await stack.runs_of_event(sent.json()["id"])

        await wait_until(ran, timeout=30)
    finally:
        node.terminate()
        await node.wait()
