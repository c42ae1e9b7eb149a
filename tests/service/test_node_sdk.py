"""kongflow against trigger.dev's real v2 Node SDK (`@trigger.dev/sdk`, installed by
tests/support/node_sdk.py): a Node endpoint is registered, indexed and run, and the SDK's client
calls create exactly one event or run each (the SDK retries any answer but 200)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kongflow.api import BackgroundServer
from tests.support.jobs_stack import Stack, jobs_stack, wait_until
from tests.support.node_sdk import NodeSdk, install

ENDPOINT_ID = "node-app"
NODE_JOBS = 10  # the jobs tests/node/endpoint.mjs defines (without INTERVAL_SECONDS)


@pytest.fixture(scope="session")
def node_root() -> Path:
    return install()


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    # A long request deadline: the SDK yields (and is executed again) just before it.
    async with jobs_stack(database_url, schema, request_timeout=30.0) as stack:
        yield stack


@pytest.fixture
async def node(stack: Stack, node_root: Path) -> AsyncIterator[NodeSdk]:
    sdk = NodeSdk(node_root, str(stack.api.base_url).rstrip("/"), stack.env.api_key, ENDPOINT_ID)
    async with sdk.endpoint() as url:
        response = await stack.api.post("/api/v1/endpoints", json={"url": url, "name": ENDPOINT_ID})
        assert response.status_code == 200, response.text

        async def indexed() -> bool:
            return await count(stack, "job_definitions", "slug like 'node-%%'") == NODE_JOBS

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
    async with stack.no_worker():  # the next run waits before it starts
        waiting = (await node.call("invokeJob", "node-invoked", json.dumps({})))["id"]
        cancelled = await node.call("cancelRun", waiting)
    assert (cancelled["id"], cancelled["status"], cancelled["tasks"]) == (waiting, "CANCELED", [])
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


async def test_three_steps_the_second_retried_once(stack: Stack, node: NodeSdk) -> None:
    run_id = await stack.test("node-steps")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == {"one": 1, "two": 2, "attempts": 2, "three": 3}
    # Each completed step is skipped on re-execution: 1 runs once, 2 twice (its retry), 3 once.
    assert (await node.calls())[run_id] == {"step-1": 1, "step-2": 2, "step-3": 1}
    assert run["executionCount"] == 2  # one retry of step 2: one re-execution
    read = await node.call("getRun", run_id)
    assert [(t["name"], t["status"]) for t in read["tasks"]] == [
        ("Task", "COMPLETED"),
        ("log", "COMPLETED"),
        ("Task", "COMPLETED"),
        ("Task", "COMPLETED"),
    ]
    assert [t["displayKey"] for t in read["tasks"]] == ["step-1", None, "step-2", "step-3"]
    assert "WAITING_TO_CONTINUE" in await stack.statuses(run_id)


async def test_wait_really_waits_then_on_success_is_called_once(
    stack: Stack, node: NodeSdk
) -> None:
    run_id = await stack.test("node-wait", {"seconds": 2})

    async def waiting() -> bool:
        return await stack.status(run_id) == "WAITING_TO_CONTINUE"

    await wait_until(waiting, timeout=20)
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"]["waitedMs"] >= 2000

    async def notified() -> bool:
        return (await node.calls())[run_id].get("onSuccess") == 1

    await wait_until(notified, timeout=20)
    await asyncio.sleep(1)  # and no second notification comes
    assert (await node.calls())[run_id] == {"before": 1, "after": 1, "onSuccess": 1}


async def test_a_run_cancelled_while_it_waits_stays_cancelled(stack: Stack, node: NodeSdk) -> None:
    run_id = await stack.test("node-wait", {"seconds": 1})

    async def waiting() -> bool:
        return await stack.status(run_id) == "WAITING_TO_CONTINUE"

    await wait_until(waiting, timeout=20)
    cancelled = await node.call("cancelRun", run_id)
    assert cancelled["status"] == "CANCELED"
    pause = next(t for t in cancelled["tasks"] if t["displayKey"] == "pause")
    assert pause["status"] == "CANCELED"
    await asyncio.sleep(2.5)  # past the wait: nothing resumes it
    assert await stack.status(run_id) == "CANCELED"
    assert "after" not in (await node.calls())[run_id]


async def test_statuses_store_and_events_sent_from_a_run(stack: Stack, node: NodeSdk) -> None:
    run_id = await stack.test("node-io")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == {"remembered": {"colour": "green"}, "sent": "node.echo"}
    statuses = await node.call("getRunStatuses", run_id)
    (progress,) = statuses["statuses"]
    assert (progress["key"], progress["label"], progress["state"]) == (
        "progress",
        "Working",
        "success",
    )
    assert progress["data"] == {"done": 1}
    assert [h.get("state") for h in progress["history"]] == ["loading", "success"]
    shared = await stack.api.get("/api/v1/store/shared")
    assert shared.json() == {"action": "GET", "key": "shared", "value": "42"}
    assert await count(stack, "event_records", "name = 'node.echo'") == 1

    async def echoed() -> bool:
        return await count(stack, "job_runs r", "r.status = 'SUCCESS'") == 2

    await wait_until(echoed, timeout=20)


async def test_invalid_payload_and_a_filtered_event_from_node(stack: Stack, node: NodeSdk) -> None:
    run = await stack.run(await stack.test("node-typed", {"n": "x"}))
    assert run["status"] == "INVALID_PAYLOAD"
    assert run["output"]["errors"][0]["path"] == ["n"]
    free = await node.call(
        "sendEvent", json.dumps({"name": "node.plan", "payload": {"plan": "free"}})
    )
    pro = await node.call(
        "sendEvent", json.dumps({"name": "node.plan", "payload": {"plan": "pro"}})
    )

    async def pro_ran() -> bool:
        return await stack.runs_of_event(pro["id"]) == [("node-filtered", "SUCCESS")]

    await wait_until(pro_ran, timeout=20)
    assert await stack.runs_of_event(free["id"]) == []
    # an invokeTrigger job runs only when invoked, not for an event of its name
    invoke = await node.call("sendEvent", json.dumps({"name": "invoke", "payload": {}}))
    await asyncio.sleep(0.5)
    assert await stack.runs_of_event(invoke["id"]) == []


async def test_a_background_fetch_is_made_by_kongflow(stack: Stack, node: NodeSdk) -> None:
    received: list[tuple[str, bytes]] = []

    async def target(request: Request) -> JSONResponse:
        received.append((request.method, await request.body()))
        await asyncio.sleep(0.5)  # the run waits meanwhile, holding no request open
        return JSONResponse({"answer": 42})

    app = Starlette(routes=[Route("/slow", target, methods=["POST"])])
    async with BackgroundServer(app) as server:
        run_id = await stack.test("node-fetch", {"url": f"{server.url}/slow"})
        run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == {"body": {"answer": 42}}
    assert received == [("POST", b'{"q":1}')]
    assert "WAITING_TO_CONTINUE" in await stack.statuses(run_id)


async def test_a_parallel_child_retried_resumes_the_run(stack: Stack, node: NodeSdk) -> None:
    run_id = await stack.test("node-parallel")
    run = await stack.run(run_id, timeout=30)
    assert (run["status"], run["output"]) == ("SUCCESS", {"results": [10, 20]}), run["output"]
    assert (await node.calls())[run_id] == {"child-1": 1, "child-2": 2}


async def test_a_background_fetch_answer_that_cannot_be_stored_fails_the_run(
    stack: Stack, node: NodeSdk
) -> None:
    async def binary(request: Request) -> Response:
        return Response(b"\x00\x01\x02", media_type="application/octet-stream")

    app = Starlette(routes=[Route("/binary", binary, methods=["POST"])])
    async with BackgroundServer(app) as server:
        run = await stack.run(await stack.test("node-fetch", {"url": f"{server.url}/binary"}))
    assert run["status"] == "FAILURE"
    assert "could not be stored" in json.dumps(run["output"])
