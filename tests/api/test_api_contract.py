"""The OpenAPI schema is a contract both ways: every status a route documents is one it really
answers (each is produced here, against the real stack), and the answers it gives are
documented."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kongflow.api.guard import MAX_BODY_BYTES
from tests.support.jobs_stack import ENDPOINT_SLUG, Stack, jobs_stack


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


class Recorder:
    """Sends requests and notes, per route template, the statuses that came back."""

    def __init__(self, stack: Stack, templates: list[tuple[str, str]]) -> None:
        self.stack = stack
        self.seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._routes = [
            (method, template, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
            for method, template in templates
        ]

    async def __call__(self, method: str, path: str, **options: Any) -> int:
        response = await self.stack.api.request(method, path, **options)
        for route_method, template, pattern in self._routes:
            if route_method == method.lower() and pattern.match(path.split("?")[0]):
                self.seen[(route_method, template)].add(str(response.status_code))
                break
        else:
            raise AssertionError(f"no documented route for {method} {path}")
        return response.status_code


async def test_every_documented_status_is_answered_and_every_answer_documented(
    stack: Stack,
) -> None:
    schema = (await stack.api.get("/openapi.json")).json()
    documented = {
        (method, path): set(operation["responses"])
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    send = Recorder(stack, list(documented))
    no_key = {"headers": {"Authorization": ""}}
    malformed = {"content": b"{nope", "headers": {"content-type": "application/json"}}
    too_big = {"content": b"x" * (MAX_BODY_BYTES + 1)}
    long_id = "x" * 300
    done = await stack.test("echo")
    await stack.run(done)
    other_key = await stack.api.post("/api/v1/jobs/echo/invoke", headers={"idempotency-key": "k"})
    assert other_key.status_code == 200
    routes_with_ids = [
        ("post", "/api/v1/jobs/{}/test", "echo"),
        ("post", "/api/v1/jobs/{}/invoke", "echo"),
        ("get", "/api/v1/runs/{}", done),
        ("get", "/api/v1/runs/{}/history", done),
        ("get", "/api/v2/runs/{}", done),
        ("get", "/api/v2/runs/{}/statuses", done),
        ("post", "/api/v1/runs/{}/cancel", done),
        ("post", "/api/v1/runs/{}/tasks", done),
        ("post", "/api/v1/runs/{}/tasks/t1/complete", done),
        ("post", "/api/v1/runs/{}/tasks/t1/fail", done),
        ("put", "/api/v1/runs/{}/statuses/s1", done),
        ("post", "/api/v1/events/{}/cancel", "evt-1"),
        ("get", "/api/v1/store/{}", "k"),
        ("head", "/api/v1/store/{}", "k"),
        ("put", "/api/v1/store/{}", "k"),
        ("delete", "/api/v1/store/{}", "k"),
        ("get", "/api/v1/jobs/{}/runs", "echo"),
    ]
    for method, path, real in routes_with_ids:
        await send(method, path.format(real), **no_key)
        await send(method, path.format(real), **malformed)
        await send(method, path.format(real), **too_big)
        await send(method, path.format(long_id))
        await send(method, path.format("nope"), **_valid(path))
    for method, path in [
        ("post", "/api/v1/events"),
        ("post", "/api/v1/events/bulk"),
        ("post", "/api/v1/endpoints"),
    ]:
        await send(method, path, **no_key)
        await send(method, path, **malformed)
        await send(method, path, **too_big)
    await send("get", "/api/v1/endpoints", **no_key)
    await send("get", "/api/v1/endpoints", **malformed)
    await send("get", "/api/v1/endpoints", **too_big)
    # The successes, and the route-specific errors.
    await send("post", "/api/v1/jobs/echo/test", json={"payload": {"a": 1}})
    await send("post", "/api/v1/jobs/echo/invoke", json={})
    await send("post", "/api/v1/jobs/echo/invoke", headers={"idempotency-key": "k"})  # 200
    await send("post", "/api/v1/jobs/boom/invoke", headers={"idempotency-key": "k"})  # 409
    await send("get", f"/api/v1/runs/{done}")
    await send("get", f"/api/v1/runs/{done}/history")
    await send("get", f"/api/v2/runs/{done}")
    await send("get", "/api/v1/jobs/echo/runs?take=1")
    await send("get", f"/api/v2/runs/{done}/statuses")
    await send("post", f"/api/v1/runs/{done}/cancel")
    gated = await stack.test("gate")
    await stack.executing(gated)
    tasks = f"/api/v1/runs/{gated}/tasks"
    task = await send("post", tasks, json={"idempotencyKey": "a"}, headers={"idempotency-key": "a"})
    await send("post", tasks, json={"idempotencyKey": "b"})  # 400: no Idempotency-Key header
    again = await stack.api.post(
        tasks, json={"idempotencyKey": "a"}, headers={"idempotency-key": "a"}
    )
    task_id = again.json()["id"]
    assert task == 200
    await send("post", f"{tasks}/{task_id}/fail", json={"error": {"message": "m"}})
    await send("post", f"{tasks}/{task_id}/complete", json={})
    await send("post", f"{tasks}/nope/complete", json={})  # 404
    await send("put", f"/api/v1/runs/{gated}/statuses/s1", json={"label": "L"})
    stack.release.set()
    await send("put", "/api/v1/store/k", content=b'"v"', headers={"content-type": "text/plain"})
    await send("put", "/api/v1/store/k", content=b"x" * (300 * 1024))  # 413
    await send("get", "/api/v1/store/k")
    await send("head", "/api/v1/store/k")
    await send("head", "/api/v1/store/none")  # 404
    await send("delete", "/api/v1/store/k")
    await send("post", "/api/v1/events", json={"event": {"name": "test.echo", "id": "evt-1"}})
    await send("post", "/api/v1/events/bulk", json={"events": [{"name": "test.echo"}]})
    await send("post", "/api/v1/events/evt-1/cancel")
    await send("post", "/api/v1/endpoints", json={"slug": ENDPOINT_SLUG, "url": stack.endpoint_url})
    await send("post", "/api/v1/endpoints", json={"slug": "down", "url": "http://127.0.0.1:9"})
    await send("get", "/api/v1/endpoints")
    await send("get", "/health")
    # The database goes away: every route says so.
    await stack.run(gated)
    await stack.jobs.queue.stop(5)
    await stack.jobs.client.pool.close()
    for method, path, real in routes_with_ids:
        await send(method, path.format(real), **_valid(path))
    await send("head", "/api/v1/store/k")
    await send("post", "/api/v1/events", json={"event": {"name": "test.echo"}})
    await send("post", "/api/v1/events/bulk", json={"events": [{"name": "test.echo"}]})
    await send("post", "/api/v1/endpoints", json={"slug": ENDPOINT_SLUG, "url": stack.endpoint_url})
    await send("get", "/api/v1/endpoints")
    await send("get", "/health")

    for route, statuses in documented.items():
        assert statuses <= send.seen[route], f"{route}: documented, never answered: " + str(
            sorted(statuses - send.seen[route])
        )
        assert send.seen[route] <= statuses, f"{route}: answered, not documented: " + str(
            sorted(send.seen[route] - statuses)
        )


def _valid(path: str) -> dict[str, Any]:
    """A body (and headers) the route takes, so that only its id decides the answer."""
    if path.endswith("/tasks"):
        return {"json": {"idempotencyKey": "t"}, "headers": {"idempotency-key": "t"}}
    if path.endswith("/fail"):
        return {"json": {"error": {"message": "m"}}}
    if path.endswith("/complete") or "/statuses/" in path:
        return {"json": {}}
    return {}
