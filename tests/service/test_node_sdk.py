"""kongflow against trigger.dev's real v2 Node SDK (`@trigger.dev/sdk`, installed by
tests/support/node_sdk.py): a Node endpoint is registered, indexed and run, and the SDK's client
calls create exactly one event or run each (the SDK retries any answer but 200)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.jobs_stack import Stack, jobs_stack, wait_until
from tests.support.node_sdk import NodeSdk, install

ENDPOINT_ID = "node-app"


@pytest.fixture(scope="session")
def node_root() -> Path:
    return install()


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


@pytest.fixture
async def node(stack: Stack, node_root: Path) -> AsyncIterator[NodeSdk]:
    sdk = NodeSdk(node_root, str(stack.api.base_url).rstrip("/"), stack.env.api_key, ENDPOINT_ID)
    async with sdk.endpoint() as url:
        response = await stack.api.post("/api/v1/endpoints", json={"url": url, "name": ENDPOINT_ID})
        assert response.status_code == 200, response.text

        async def indexed() -> bool:
            return await count(stack, "job_definitions", "slug like 'node-%%'") == 2

        await wait_until(indexed, timeout=20)
        yield sdk


async def count(stack: Stack, table: str, where: str = "true") -> int:
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select count(*) from "{stack.jobs.client.schema}".{table} where {where}'  # type: ignore[arg-type]
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_node_endpoint_is_indexed_tested_and_run(stack: Stack, node: NodeSdk) -> None:
    run_id = await stack.test("node-echo", {"hello": "node"})
    run = await stack.run(run_id)
    assert (run["status"], run["output"]) == ("SUCCESS", {"echo": {"hello": "node"}})


async def test_send_event_creates_exactly_one_event_and_run(stack: Stack, node: NodeSdk) -> None:
    sent = await node.call("sendEvent", json.dumps({"name": "node.echo", "payload": {"n": 1}}))
    assert sent["name"] == "node.echo"
    assert await count(stack, "event_records", "name = 'node.echo'") == 1

    async def ran() -> bool:
        return await stack.runs_of_event(sent["id"]) == [("node-echo", "SUCCESS")]

    await wait_until(ran, timeout=20)
    assert await count(stack, "event_records", "name = 'node.echo'") == 1


async def test_invoke_job_creates_exactly_one_run(stack: Stack, node: NodeSdk) -> None:
    invoked = await node.call("invokeJob", "node-invoked", json.dumps({"x": 2}))
    run = await stack.run(invoked["id"])
    assert (run["status"], run["output"]) == ("SUCCESS", {"invoked": {"x": 2}})
    assert await count(stack, "job_runs r", "true") == 1


async def test_get_run_cancel_run_and_statuses_through_the_sdk(stack: Stack, node: NodeSdk) -> None:
    done = await stack.test("node-echo", {"a": 1})
    await stack.run(done)
    run = await node.call("getRun", done)
    assert (run["id"], run["status"], run["output"]) == (done, "SUCCESS", {"echo": {"a": 1}})
    assert (run["tasks"], run["statuses"]) == ([], [])
    assert run["completedAt"] is not None
    statuses = await node.call("getRunStatuses", done)
    assert (statuses["run"]["status"], statuses["statuses"]) == ("SUCCESS", [])
    await stack.jobs.client.pause_queue("executions")  # the next run waits before it starts
    waiting = (await node.call("invokeJob", "node-invoked", json.dumps({})))["id"]
    cancelled = await node.call("cancelRun", waiting)
    assert (cancelled["id"], cancelled["status"], cancelled["tasks"]) == (waiting, "CANCELED", [])
    await stack.jobs.client.resume_queue("executions")
    assert (await stack.run(waiting))["status"] == "CANCELED"


async def test_send_events_in_bulk_and_cancel_a_delayed_one(stack: Stack, node: NodeSdk) -> None:
    events = [{"name": "node.echo", "payload": {"n": n}} for n in (1, 2)]
    sent = await node.call("sendEvents", json.dumps(events))
    assert [e["payload"] for e in sent] == [{"n": 1}, {"n": 2}]
    assert await count(stack, "event_records", "name = 'node.echo'") == 2

    async def ran() -> bool:
        runs = [await stack.runs_of_event(e["id"]) for e in sent]
        return runs == [[("node-echo", "SUCCESS")]] * 2

    await wait_until(ran, timeout=20)
    later = await node.call(
        "sendEvent",
        json.dumps({"name": "node.echo", "payload": {}}),
        json.dumps({"deliverAfter": 60}),
    )
    cancelled = await node.call("cancelEvent", later["id"])
    assert cancelled["id"] == later["id"]
    assert cancelled["cancelledAt"] is not None
    assert await count(stack, "jobs", "task_identifier = 'deliverEvent'") == 0
    again = await node.call("cancelEvent", later["id"])  # cancelled already: unchanged
    assert again["cancelledAt"] == cancelled["cancelledAt"]
    assert await stack.runs_of_event(later["id"]) == []


async def test_get_runs_pages_a_jobs_runs_newest_first(stack: Stack, node: NodeSdk) -> None:
    run_ids = [await stack.test("node-echo", {"n": n}) for n in range(3)]
    first = await node.call("getRuns", "node-echo", json.dumps({"take": 2}))
    assert [r["id"] for r in first["runs"]] == run_ids[:0:-1]
    assert first["nextCursor"] == run_ids[1]
    rest = await node.call(
        "getRuns", "node-echo", json.dumps({"take": 2, "cursor": first["nextCursor"]})
    )
    assert [r["id"] for r in rest["runs"]] == run_ids[:1]
    assert rest.get("nextCursor") is None
