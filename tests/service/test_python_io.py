"""kongflow's Python endpoint SDK and its durable io against the real stack: the scenarios
tests/service/test_node_sdk.py runs with trigger.dev's Node SDK (steps and retries, waits,
cancellation, statuses, the key-value store, events, payload errors, event filters), and what
only the io protocol shows: subtasks, failed tasks, yields and auto-yields, lazily loaded
cached tasks, and an API that fails or cannot be reached.

The endpoints run in-process (served with BackgroundServer), so their jobs note what really
ran in `CALLS`, and each endpoint's EXECUTE_JOB answers are noted by `Answers`."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kongflow.api import BackgroundServer
from kongflow.sdk import (
    IO,
    Context,
    Endpoint,
    RetryOptions,
    Scheduled,
    ServerTask,
    TaskError,
    event_trigger,
    interval_trigger,
    invoke_trigger,
)
from kongflow.sdk.example import example_endpoint
from kongflow.sdk.keys import idempotency_key
from tests.support.helpers import free_port
from tests.support.jobs_stack import Stack, jobs_stack, wait_until

ENDPOINT_ID = "py-app"

#: What each run really did: how many times each step's body (or the job, or a hook) ran.
CALLS: defaultdict[str, Counter[str]] = defaultdict(Counter)
#: The run notifications the hooks received, per run.
NOTIFICATIONS: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
#: Released by a test to let the `hold` step of its run finish.
GATES: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

#: A task output big enough that a few fill the cached tasks an execution is sent (3.5 MB),
#: yet within the API's 1 MiB request bodies.
BIG_OUTPUT = 900_000
BIG_PARTS = 5


def called(run_id: str, what: str) -> None:
    CALLS[run_id][what] += 1


class Numbered(BaseModel):
    n: int


def python_endpoint(api_key: str, api_url: str) -> Endpoint:
    """The Python twin of tests/node/endpoint.mjs, and jobs for what only Python tests."""
    endpoint = Endpoint(id=ENDPOINT_ID, api_key=api_key, api_url=api_url)

    @endpoint.job(id="py-echo", name="Py echo", version="1.0.0", trigger=event_trigger("py.echo"))
    async def echo(payload: Any, io: IO, ctx: Context) -> Any:
        return {"echo": payload}

    # Three steps; the second fails on its first attempt and is retried.
    @endpoint.job(
        id="py-steps", name="Py steps", version="1.0.0", trigger=event_trigger("py.steps")
    )
    async def steps(payload: Any, io: IO, ctx: Context) -> Any:
        retry = RetryOptions(limit=3, min_timeout_in_ms=200, factor=1, randomize=False)

        async def step_1(task: ServerTask) -> dict[str, int]:
            called(ctx.run_id, "step-1")
            return {"one": 1}

        async def step_2(task: ServerTask) -> dict[str, int]:
            called(ctx.run_id, "step-2")
            if task.attempts == 1:
                raise RuntimeError("the first attempt fails")
            return {"two": 2, "attempts": task.attempts}

        async def step_3(task: ServerTask) -> dict[str, int]:
            called(ctx.run_id, "step-3")
            return {"three": 3}

        one = await io.run_task("step-1", step_1, icon="bolt")
        await io.logger.info("between steps", extra={"one": one})
        two = await io.run_task("step-2", step_2, retry=retry)
        three = await io.run_task("step-3", step_3)
        return {**one, **two, **three}

    # A step, a wait, a step; its hooks record the notifications they get.
    async def on_success(notification: dict[str, Any]) -> None:
        called(notification["id"], "onSuccess")
        NOTIFICATIONS[notification["id"]].append(notification)

    async def on_failure(notification: dict[str, Any]) -> None:
        called(notification["id"], "onFailure")
        NOTIFICATIONS[notification["id"]].append(notification)

    @endpoint.job(
        id="py-wait",
        name="Py wait",
        version="1.0.0",
        trigger=event_trigger("py.wait"),
        on_success=on_success,
        on_failure=on_failure,
    )
    async def wait(payload: Any, io: IO, ctx: Context) -> Any:
        async def before(task: ServerTask) -> float:
            called(ctx.run_id, "before")
            return time.time() * 1000

        async def after(task: ServerTask) -> float:
            called(ctx.run_id, "after")
            return time.time() * 1000

        started: float = await io.run_task("before", before)
        await io.wait("pause", (payload or {}).get("seconds", 1))
        ended: float = await io.run_task("after", after)
        return {"waitedMs": ended - started}

    # Statuses, the key-value store and an event sent from inside a run.
    @endpoint.job(
        id="py-io",
        name="Py io",
        version="1.0.0",
        trigger=event_trigger("py.io"),
        on_success=on_success,
    )
    async def tools(payload: Any, io: IO, ctx: Context) -> Any:
        status = await io.create_status(
            "progress", label="Working", state="loading", data={"done": 0}
        )
        await io.store.run.set("remember", "colour", {"colour": "green"})
        remembered = await io.store.run.get("recall", "colour")
        in_job = await io.store.job.has("in-job", "colour")
        await io.store.env.set("env-set", "shared", 42)
        await io.store.env.set("tmp-set", "scratch", [1, 2])
        deleted = await io.store.env.delete("tmp-delete", "scratch")
        sent = await io.send_event("send", "py.echo", {"from": "io"}, id=f"echo-{ctx.run_id}")
        await status.update("progress-done", state="success", data={"done": 1})
        return {"remembered": remembered, "inJob": in_job, "deleted": deleted, "sent": sent.id}

    @endpoint.job(
        id="py-typed",
        name="Py typed",
        version="1.0.0",
        trigger=event_trigger("py.typed", schema=Numbered),
    )
    async def typed(payload: Numbered, io: IO, ctx: Context) -> Any:
        return {"doubled": payload.n * 2}

    @endpoint.job(
        id="py-filtered",
        name="Py filtered",
        version="1.0.0",
        trigger=event_trigger("py.plan", filter={"plan": ["pro"]}),
    )
    async def filtered(payload: Any, io: IO, ctx: Context) -> Any:
        return {"plan": payload["plan"]}

    # Subtasks, run concurrently inside their parent, then a wait: replayed, the parent's
    # output is cached and its subtasks are not visited again.
    @endpoint.job(
        id="py-nested", name="Py nested", version="1.0.0", trigger=event_trigger("py.nested")
    )
    async def nested(payload: Any, io: IO, ctx: Context) -> Any:
        async def child(task: ServerTask) -> str | None:
            called(ctx.run_id, "child")
            return task.parent_id

        async def parent(task: ServerTask) -> Any:
            called(ctx.run_id, "parent")
            io.logger.debug("inside the parent")
            return list(await asyncio.gather(io.run_task("a", child), io.run_task(["b", 2], child)))

        inside = await io.run_task("parent", parent)
        await io.wait("pause", 0.5)
        return {"inside": inside, "top": await io.run_task("a", child)}

    # A task that fails each attempt, out of retries.
    @endpoint.job(
        id="py-fails",
        name="Py fails",
        version="1.0.0",
        trigger=event_trigger("py.fails"),
        on_success=on_success,
        on_failure=on_failure,
    )
    async def fails(payload: Any, io: IO, ctx: Context) -> Any:
        async def call(task: ServerTask) -> None:
            called(ctx.run_id, "call")
            raise ValueError("no good")

        retry = RetryOptions(limit=2, min_timeout_in_ms=100, randomize=False)
        return await io.run_task("call", call, retry=retry)

    # A failed task caught, then found failed again (TaskError) after a wait.
    @endpoint.job(
        id="py-tolerant", name="Py tolerant", version="1.0.0", trigger=event_trigger("py.tol")
    )
    async def tolerant(payload: Any, io: IO, ctx: Context) -> Any:
        async def call(task: ServerTask) -> None:
            called(ctx.run_id, "call")
            raise KeyError("gone")

        caught = "nothing"
        try:
            await io.run_task("call", call)
        except (KeyError, TaskError) as exc:
            caught = type(exc).__name__
            called(ctx.run_id, f"caught {caught}")
        await io.wait("pause", 0.5)
        return {"caught": caught}

    @endpoint.job(
        id="py-repeat", name="Py repeat", version="1.0.0", trigger=event_trigger("py.repeat")
    )
    async def repeat(payload: Any, io: IO, ctx: Context) -> None:
        async def body(task: ServerTask) -> int:
            return 1

        await io.run_task(["step", 1], body)
        await io.run_task(["step", 1], body)

    # A step that waits until the test lets it finish (then, if asked, starts a subtask), then
    # another step.
    @endpoint.job(id="py-hold", name="Py hold", version="1.0.0", trigger=event_trigger("py.hold"))
    async def hold(payload: Any, io: IO, ctx: Context) -> None:
        async def inner(task: ServerTask) -> None:
            called(ctx.run_id, "inner")

        async def held(task: ServerTask) -> str:
            called(ctx.run_id, "hold")
            await GATES[ctx.run_id].wait()
            if payload["inner"]:
                await io.run_task("inner", inner)
            return "released"

        async def after(task: ServerTask) -> None:
            called(ctx.run_id, "after")

        await io.run_task("hold", held)
        await io.run_task("after", after)

    @endpoint.job(
        id="py-yield", name="Py yield", version="1.0.0", trigger=event_trigger("py.yield")
    )
    async def yields(payload: Any, io: IO, ctx: Context) -> Any:
        called(ctx.run_id, "execution")
        io.yield_("first")
        io.yield_("second")
        return {"through": True}

    # A step whose body runs close to the execution's time limit.
    @endpoint.job(id="py-slow", name="Py slow", version="1.0.0", trigger=event_trigger("py.slow"))
    async def slow(payload: Any, io: IO, ctx: Context) -> Any:
        async def sleepy(task: ServerTask) -> bool:
            called(ctx.run_id, "slow")
            await asyncio.sleep(payload["seconds"])
            return True

        async def after(task: ServerTask) -> int:
            called(ctx.run_id, "after")
            return 1

        return {
            "slow": await io.run_task("slow", sleepy),
            "after": await io.run_task("after", after),
        }

    return endpoint


def relayed_endpoint(api_key: str, api_url: str) -> Endpoint:
    """Jobs whose io goes through a Relay."""
    endpoint = Endpoint(id="py-relayed", api_key=api_key, api_url=api_url)

    @endpoint.job(id="py-one", name="Py one", version="1.0.0", trigger=event_trigger("py.one"))
    async def one(payload: Any, io: IO, ctx: Context) -> Any:
        async def body(task: ServerTask) -> int:
            called(ctx.run_id, "one")
            return 7

        return await io.run_task("one", body)

    # Big outputs: more than one execution's cached tasks, the rest loaded lazily.
    @endpoint.job(id="py-many", name="Py many", version="1.0.0", trigger=event_trigger("py.many"))
    async def many(payload: Any, io: IO, ctx: Context) -> Any:
        def part(n: int) -> Any:
            async def body(task: ServerTask) -> str:
                called(ctx.run_id, f"part-{n}")
                return str(n) * BIG_OUTPUT

            return body

        parts = [await io.run_task(f"part-{n}", part(n)) for n in range(BIG_PARTS)]
        io.yield_("reload")  # executed again, with the parts as cached tasks
        return [(p[0], len(p)) for p in parts]

    return endpoint


def lost_endpoint(api_key: str) -> Endpoint:
    """A job whose io calls an API nobody listens for."""
    endpoint = Endpoint(id="py-lost", api_key=api_key, api_url=f"http://127.0.0.1:{free_port()}")

    @endpoint.job(id="py-lost", name="Py lost", version="1.0.0", trigger=event_trigger("py.lost"))
    async def lost(payload: Any, io: IO, ctx: Context) -> None:
        await io.wait("pause", 1)

    return endpoint


# -- serving --------------------------------------------------------------------------------------


class Answers:
    """ASGI wrapper noting, per run, the status of each EXECUTE_JOB answer the app gives."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.by_run: defaultdict[str, list[str]] = defaultdict(list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (b"x-trigger-action", b"EXECUTE_JOB") not in scope["headers"]:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        run_id = json.loads(raw)["run"]["id"]
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        body: list[bytes] = []

        async def noted(message: Any) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.by_run[run_id].append(json.loads(b"".join(body))["status"])
            await send(message)

        await self.app(scope, replay, noted)


@dataclass
class Served:
    endpoint: Endpoint
    answers: Answers
    url: str


@asynccontextmanager
async def serve(stack: Stack, endpoint: Endpoint) -> AsyncIterator[Served]:
    """The endpoint served, registered and indexed."""
    answers = Answers(endpoint.app)
    async with BackgroundServer(answers) as server:
        response = await stack.api.post(
            "/api/v1/endpoints", json={"url": server.url, "name": endpoint.id}
        )
        assert response.status_code == 200, response.text

        async def indexed() -> bool:
            return await indexed_jobs(stack, endpoint.id) == len(endpoint.jobs)

        await wait_until(indexed, timeout=20)
        yield Served(endpoint, answers, server.url)


async def indexed_jobs(stack: Stack, endpoint_slug: str) -> int:
    schema = stack.jobs.client.schema
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select count(*) from "{schema}".job_versions v'  # type: ignore[arg-type]
            f' join "{schema}".endpoints e on e.id = v.endpoint_id where e.slug = %s',
            (endpoint_slug,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    cursor: str | None
    status: int


@dataclass
class Relay:
    """A pass-through in front of the real API: each request is forwarded and noted, except
    that the next `unavailable` task requests are answered 503 (as a proxy whose upstream is
    briefly down answers) without reaching it."""

    upstream: str
    unavailable: int = 0
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = scope["raw_path"].decode()  # as sent, still percent-encoded
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode()
        body = await request.body()
        if self.unavailable and request.method == "POST" and path.endswith("/tasks"):
            self.unavailable -= 1
            response: Response = JSONResponse({"error": "upstream unavailable"}, 503)
        else:
            headers = {
                k: v
                for k, v in request.headers.items()
                if k not in ("host", "content-length", "connection", "accept-encoding")
            }
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.request(
                    request.method, self.upstream + path, content=body, headers=headers
                )
            kept = {
                k: v
                for k, v in answer.headers.items()
                if k
                not in ("content-length", "content-encoding", "transfer-encoding", "connection")
            }
            response = Response(answer.content, answer.status_code, headers=kept)
        self.seen.append(
            Seen(
                request.method,
                path,
                request.headers.get("idempotency-key"),
                request.headers.get("x-cached-tasks-cursor"),
                response.status_code,
            )
        )
        await response(scope, receive, send)

    def task_requests(self, key: str) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/tasks") and s.idempotency_key == key]


def api_url(stack: Stack) -> str:
    return str(stack.api.base_url).rstrip("/")


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema, request_timeout=30.0) as stack:
        yield stack


@pytest.fixture
async def app(stack: Stack) -> AsyncIterator[Served]:
    async with serve(stack, python_endpoint(stack.env.api_key, api_url(stack))) as served:
        yield served


@pytest.fixture
async def relayed(stack: Stack) -> AsyncIterator[tuple[Served, Relay]]:
    relay = Relay(api_url(stack))
    async with (
        BackgroundServer(relay) as server,
        serve(stack, relayed_endpoint(stack.env.api_key, server.url)) as served,
    ):
        yield served, relay


async def tasks_of(stack: Stack, run_id: str, subtasks: bool = False) -> list[dict[str, Any]]:
    params = {"subtasks": "true"} if subtasks else {}
    response = await stack.api.get(f"/api/v2/runs/{run_id}", params=params)
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


async def stored_tasks(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    """The run's tasks as the jobs service stored them, in creation order."""
    schema = stack.jobs.client.schema
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            "select display_key, name, icon, description, noop, params, properties, style"
            f' from "{schema}".tasks where run_id = %s order by position',  # type: ignore[arg-type]
            (run_id,),
        )
        assert cur.description is not None
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def send(stack: Stack, name: str, payload: Any) -> str:
    response = await stack.api.post(
        "/api/v1/events", json={"event": {"name": name, "payload": payload}}
    )
    assert response.status_code == 200, response.text
    event_id: str = response.json()["id"]
    return event_id


# -- the Node SDK's scenarios ---------------------------------------------------------------------


async def test_three_steps_the_second_retried_once(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-steps")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == {"one": 1, "two": 2, "attempts": 2, "three": 3}
    # Each completed step is skipped on re-execution: 1 runs once, 2 twice (its retry), 3 once.
    assert CALLS[run_id] == {"step-1": 1, "step-2": 2, "step-3": 1}
    assert run["executionCount"] == 2  # one retry of step 2: one re-execution
    assert app.answers.by_run[run_id] == ["RETRY_WITH_TASK", "SUCCESS"]
    tasks = await tasks_of(stack, run_id)
    assert [(t["name"], t["status"]) for t in tasks] == [
        ("Task", "COMPLETED"),
        ("log", "COMPLETED"),
        ("Task", "COMPLETED"),
        ("Task", "COMPLETED"),
    ]
    assert [t["displayKey"] for t in tasks] == ["step-1", None, "step-2", "step-3"]
    assert [t["icon"] for t in tasks] == ["bolt", "log", None, None]
    log = (await stored_tasks(stack, run_id))[1]
    assert log == {
        "display_key": None,
        "name": "log",
        "icon": "log",
        "description": "between steps",
        "noop": True,
        "params": {"one": {"one": 1}},
        "properties": [{"label": "Level", "text": "INFO"}],
        "style": {"style": "minimal", "variant": "info"},
    }
    assert "WAITING_TO_CONTINUE" in await stack.statuses(run_id)


async def test_wait_really_waits_then_on_success_is_called_once(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-wait", {"seconds": 1})

    async def waiting() -> bool:
        return await stack.status(run_id) == "WAITING_TO_CONTINUE"

    await wait_until(waiting, timeout=20)
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"]["waitedMs"] >= 1000
    assert app.answers.by_run[run_id] == ["RESUME_WITH_TASK", "SUCCESS"]
    pause = (await stored_tasks(stack, run_id))[1]
    assert (pause["display_key"], pause["name"], pause["icon"], pause["noop"]) == (
        "pause",
        "wait",
        "clock",
        True,
    )
    assert (pause["params"], pause["style"]) == ({"seconds": 1}, {"style": "minimal"})

    async def notified() -> bool:
        return CALLS[run_id]["onSuccess"] == 1

    await wait_until(notified, timeout=20)
    await asyncio.sleep(1)  # and no second notification comes
    assert CALLS[run_id] == {"before": 1, "after": 1, "onSuccess": 1}


async def test_a_run_cancelled_while_it_waits_stays_cancelled(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-wait", {"seconds": 1})

    async def waiting() -> bool:
        return await stack.status(run_id) == "WAITING_TO_CONTINUE"

    await wait_until(waiting, timeout=20)
    response = await stack.api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "CANCELED"
    pause = next(t for t in cancelled["tasks"] if t["displayKey"] == "pause")
    assert pause["status"] == "CANCELED"
    await asyncio.sleep(1.5)  # past the wait: nothing resumes it
    assert await stack.status(run_id) == "CANCELED"
    assert CALLS[run_id]["before"] == 1
    assert "after" not in CALLS[run_id]  # the step after the wait never ran
    assert "onSuccess" not in CALLS[run_id]
    assert app.answers.by_run[run_id] == ["RESUME_WITH_TASK"]


async def test_statuses_store_and_events_sent_from_a_run(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-io")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == {
        "remembered": {"colour": "green"},
        "inJob": False,
        "deleted": True,
        "sent": f"echo-{run_id}",
    }
    response = await stack.api.get(f"/api/v2/runs/{run_id}/statuses")
    assert response.status_code == 200, response.text
    (progress,) = response.json()["statuses"]
    assert (progress["key"], progress["label"], progress["state"]) == (
        "progress",
        "Working",
        "success",
    )
    assert progress["data"] == {"done": 1}
    assert [h.get("state") for h in progress["history"]] == ["loading", "success"]
    shared = await stack.api.get("/api/v1/store/shared")
    assert shared.json() == {"action": "GET", "key": "shared", "value": "42"}
    kept = await stack.api.get(f"/api/v1/store/run:{run_id}:colour")
    assert json.loads(kept.json()["value"]) == {"colour": "green"}
    assert (await stack.api.head("/api/v1/store/scratch")).status_code == 404
    tasks = await stored_tasks(stack, run_id)
    assert [(t["display_key"], t["name"], t["icon"]) for t in tasks] == [
        ("progress", "Working", "bell"),
        ("remember", "Key-Value Store Set", "database-plus"),
        ("recall", "Key-Value Store Get", "database-export"),
        ("in-job", "Key-Value Store Has", "database-search"),
        ("env-set", "Key-Value Store Set", "database-plus"),
        ("tmp-set", "Key-Value Store Set", "database-plus"),
        ("tmp-delete", "Key-Value Store Delete", "database-minus"),
        ("send", "Send Event", "send"),
        ("progress-done", "Status update", "bell"),
    ]
    assert tasks[0]["properties"] == [
        {"label": "Label", "text": "Working"},
        {"label": "State", "text": "loading"},
    ]
    assert tasks[4]["properties"] == [
        {"label": "namespace", "text": "env"},
        {"label": "key", "text": "shared"},
        {"label": "value", "text": "42"},
    ]
    assert tasks[7]["properties"] == [
        {"label": "name", "text": "py.echo"},
        {"label": "ID", "text": f"echo-{run_id}"},
    ]

    async def echoed() -> bool:
        return await stack.runs_of_event(f"echo-{run_id}") == [("py-echo", "SUCCESS")]

    await wait_until(echoed, timeout=20)

    # Outside runs, the endpoint's own store calls the API directly.
    store = app.endpoint.store.env
    assert await store.get("shared") == 42
    assert await store.set("greeting", {"text": "hi"}) == {"text": "hi"}
    assert await store.has("greeting") is True
    assert await store.delete("greeting") is True
    assert (await store.has("greeting"), await store.get("greeting")) == (False, None)


async def test_invalid_payload_and_a_filtered_event(stack: Stack, app: Served) -> None:
    run = await stack.run(await stack.test("py-typed", {"n": "x"}))
    assert run["status"] == "INVALID_PAYLOAD"
    assert run["output"]["errors"][0]["path"] == "n"  # the Python SDK joins the path with dots
    typed = await stack.run(await stack.test("py-typed", {"n": 4}))
    assert (typed["status"], typed["output"]) == ("SUCCESS", {"doubled": 8})
    free = await send(stack, "py.plan", {"plan": "free"})
    pro = await send(stack, "py.plan", {"plan": "pro"})

    async def pro_ran() -> bool:
        return await stack.runs_of_event(pro) == [("py-filtered", "SUCCESS")]

    await wait_until(pro_ran, timeout=20)
    assert await stack.runs_of_event(free) == []


async def test_hooks_get_trigger_devs_run_notification(stack: Stack, app: Served) -> None:
    succeeded = await stack.test("py-io")
    failed = await stack.test("py-fails")
    for run_id in (succeeded, failed):
        await stack.run(run_id, timeout=30)

    async def notified() -> bool:
        return bool(NOTIFICATIONS[succeeded] and NOTIFICATIONS[failed])

    await wait_until(notified, timeout=20)
    [success], [failure] = NOTIFICATIONS[succeeded], NOTIFICATIONS[failed]
    assert (success["ok"], success["status"], success["job"]["id"]) == (True, "SUCCESS", "py-io")
    assert success["output"]["sent"] == f"echo-{succeeded}"
    assert (failure["ok"], failure["status"]) == (False, "FAILURE")
    assert failure["error"]["message"] == "no good"
    # What trigger.dev's RunNotification has besides (RunNotificationCommon, FailedRunNotification).
    assert success.get("isTest") is True
    assert [s["key"] for s in success.get("statuses", [])] == ["progress"]
    task = failure.get("task") or {}
    assert (task.get("cacheKey"), task.get("status"), task.get("name")) == (
        "call",
        "ERRORED",
        "Task",
    )
    assert task.get("id") == idempotency_key(failed, None, "call")
    assert task.get("error", {}).get("message") == "no good"


# -- what the io protocol adds ----------------------------------------------------------------


async def test_subtasks_carry_their_parent_and_are_not_replayed(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-nested")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    tasks = await tasks_of(stack, run_id, subtasks=True)
    assert [(t["name"], t["displayKey"]) for t in tasks] == [
        ("Task", "parent"),
        ("wait", "pause"),
        ("Task", "a"),  # the same cache key as a subtask's: at the top level, another task
    ]
    parent = tasks[0]
    assert run["output"] == {"inside": [parent["id"], parent["id"]], "top": None}
    assert sorted((t["name"], t["displayKey"] or "") for t in parent["subtasks"]) == [
        ("Task", ""),  # ["b", 2]: a list key has no display key
        ("Task", "a"),
        ("log", ""),  # logged inside the parent's body
    ]
    assert all(t["status"] == "COMPLETED" for t in parent["subtasks"])
    assert CALLS[run_id] == {"parent": 1, "child": 3}
    assert app.answers.by_run[run_id] == ["RESUME_WITH_TASK", "SUCCESS"]


async def test_out_of_retries_the_task_and_the_run_fail(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-fails")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "FAILURE"
    assert (run["output"]["name"], run["output"]["message"]) == ("ValueError", "no good")
    assert 'raise ValueError("no good")' in run["output"]["stack"]
    assert CALLS[run_id]["call"] == 2  # the first attempt and its one retry
    assert app.answers.by_run[run_id] == ["RETRY_WITH_TASK", "ERROR"]
    [task] = await tasks_of(stack, run_id)
    assert (task["displayKey"], task["status"]) == ("call", "ERRORED")

    async def notified() -> bool:
        return CALLS[run_id]["onFailure"] == 1

    await wait_until(notified, timeout=20)
    assert CALLS[run_id]["onSuccess"] == 0


async def test_a_caught_task_failure_lets_the_run_go_on(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-tolerant")
    run = await stack.run(run_id, timeout=30)
    assert (run["status"], run["output"]) == ("SUCCESS", {"caught": "TaskError"})
    # The body ran once; executed again, the run found the task ERRORED: TaskError.
    assert CALLS[run_id] == {"call": 1, "caught KeyError": 1, "caught TaskError": 1}
    tasks = await tasks_of(stack, run_id)
    assert [(t["displayKey"], t["status"]) for t in tasks] == [
        ("call", "ERRORED"),
        ("pause", "COMPLETED"),
    ]


async def test_a_repeated_cache_key_fails_the_run(stack: Stack, app: Served) -> None:
    run = await stack.run(await stack.test("py-repeat"))
    assert run["status"] == "FAILURE"
    assert run["output"]["message"] == (
        'Task with cacheKey "step-1" has already been executed in this run. '
        "Each task must have a unique cacheKey."
    )


@pytest.mark.parametrize("inner", [False, True], ids=["at-its-completion", "at-a-subtask"])
async def test_a_run_cancelled_inside_a_step_stops_there(
    stack: Stack, app: Served, inner: bool
) -> None:
    run_id = await stack.test("py-hold", {"inner": inner})
    try:

        async def holding() -> bool:
            return CALLS[run_id]["hold"] == 1

        await wait_until(holding, timeout=20)
        response = await stack.api.post(f"/api/v1/runs/{run_id}/cancel")
        assert response.json()["status"] == "CANCELED"
    finally:
        GATES[run_id].set()

    async def answered() -> bool:
        # The step's completion, or its subtask, found the run cancelled.
        return app.answers.by_run[run_id] == ["CANCELED"]

    await wait_until(answered, timeout=20)
    assert await stack.status(run_id) == "CANCELED"
    [task] = await tasks_of(stack, run_id, subtasks=True)
    assert (task["displayKey"], task["status"]) == ("hold", "CANCELED")
    subtasks = [(t["displayKey"], t["status"]) for t in task["subtasks"]]
    assert subtasks == ([("inner", "CANCELED")] if inner else [])
    assert CALLS[run_id] == {"hold": 1}  # neither the subtask nor the step after ran


async def test_yield_executes_the_run_again_once_per_key(stack: Stack, app: Served) -> None:
    run_id = await stack.test("py-yield")
    run = await stack.run(run_id, timeout=30)
    assert (run["status"], run["output"]) == ("SUCCESS", {"through": True})
    assert run["executionCount"] == 3
    assert CALLS[run_id] == {"execution": 3}
    assert app.answers.by_run[run_id] == ["YIELD_EXECUTION", "YIELD_EXECUTION", "SUCCESS"]
    assert "WAITING_TO_EXECUTE" in await stack.statuses(run_id)


async def test_near_its_time_limit_a_step_is_completed_by_the_server(
    database_url: str, schema: str
) -> None:
    # A 5.4 s request deadline: executions yield 350 ms before it (a 5050 ms chunk), here
    # once a 4.5 s step is done (less than 750 ms left), the server completing the step.
    async with (
        jobs_stack(database_url, schema, request_timeout=5.4) as stack,
        serve(stack, python_endpoint(stack.env.api_key, api_url(stack))) as app,
    ):
        run_id = await stack.test("py-slow", {"seconds": 4.5})
        run = await stack.run(run_id, timeout=30)
        assert (run["status"], run["output"]) == ("SUCCESS", {"slow": True, "after": 1})
        assert CALLS[run_id] == {"slow": 1, "after": 1}
        assert run["executionCount"] == 2
        assert app.answers.by_run[run_id] == [
            "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
            "SUCCESS",
        ]
        tasks = await tasks_of(stack, run_id)
        assert [(t["displayKey"], t["status"]) for t in tasks] == [
            ("slow", "COMPLETED"),
            ("after", "COMPLETED"),
        ]


async def test_cached_tasks_beyond_an_execution_are_loaded_lazily(
    stack: Stack, relayed: tuple[Served, Relay]
) -> None:
    app, relay = relayed
    run_id = await stack.test("py-many")
    run = await stack.run(run_id, timeout=30)
    assert run["status"] == "SUCCESS", run["output"]
    assert run["output"] == [[str(n), BIG_OUTPUT] for n in range(BIG_PARTS)]
    assert CALLS[run_id] == {f"part-{n}": 1 for n in range(BIG_PARTS)}
    assert app.answers.by_run[run_id] == ["YIELD_EXECUTION", "SUCCESS"]
    ids = {t["displayKey"]: t["id"] for t in await tasks_of(stack, run_id)}
    # Executed again, the run got parts 0 to 2 with its request (3.5 MB at most) and the
    # cursor of part 3: asked for, part 3 came with the next page, which had part 4 too.
    cursors = {
        n: [s.cursor for s in relay.task_requests(idempotency_key(run_id, None, f"part-{n}"))]
        for n in range(BIG_PARTS)
    }
    assert cursors == {0: [""], 1: [""], 2: [""], 3: ["", ids["part-3"]], 4: [""]}


async def test_an_api_answering_5xx_is_tried_again_then_fails_the_run(
    stack: Stack, relayed: tuple[Served, Relay]
) -> None:
    app, relay = relayed
    relay.unavailable = 2
    run_id = await stack.test("py-one")
    run = await stack.run(run_id, timeout=30)
    assert (run["status"], run["output"]) == ("SUCCESS", 7)
    key = idempotency_key(run_id, None, "one")
    assert [s.status for s in relay.task_requests(key)] == [503, 503, 200]
    assert CALLS[run_id] == {"one": 1}

    relay.unavailable = 1000
    down = await stack.test("py-one")
    run = await stack.run(down, timeout=30)
    assert run["status"] == "FAILURE"
    assert (run["output"]["name"], run["output"]["message"]) == ("ApiError", "Failed to run task")
    assert "HTTP 503" in run["output"]["stack"]
    key = idempotency_key(down, None, "one")
    assert [s.status for s in relay.task_requests(key)] == [503] * 5  # a try and 4 retries
    assert await tasks_of(stack, down) == []
    assert app.answers.by_run[down] == ["ERROR"]


async def test_an_unreachable_api_fails_the_run(stack: Stack) -> None:
    async with serve(stack, lost_endpoint(stack.env.api_key)) as lost:
        run_id = await stack.test("py-lost")
        run = await stack.run(run_id, timeout=30)
    assert run["status"] == "FAILURE"
    assert (run["output"]["name"], run["output"]["message"]) == ("ApiError", "Failed to run task")
    assert "ConnectError" in run["output"]["stack"]
    assert lost.answers.by_run[run_id] == ["ERROR"]


async def test_the_example_endpoint_waits_and_greets(stack: Stack) -> None:
    endpoint = example_endpoint(stack.env.api_key, api_url=api_url(stack))
    async with serve(stack, endpoint) as example:
        run_id = await stack.test("wait-and-greet", {"name": "Ada", "seconds": 1})
        run = await stack.run(run_id, timeout=30)
    assert (run["status"], run["output"]) == ("SUCCESS", {"greeting": "Hello, Ada! (after 1 s)"})
    assert example.answers.by_run[run_id] == ["RESUME_WITH_TASK", "SUCCESS"]
    tasks = await tasks_of(stack, run_id)
    assert [(t["displayKey"], t["name"], t["status"]) for t in tasks] == [
        ("compose", "Compose the greeting", "COMPLETED"),
        ("pause", "wait", "COMPLETED"),
        ("finish", "Finish the greeting", "COMPLETED"),
    ]


def scheduled_endpoint(api_key: str, api_url: str) -> Endpoint:
    endpoint = Endpoint(id="py-scheduled", api_key=api_key, api_url=api_url)

    @endpoint.job(
        id="py-every-second", name="Every second", version="1", trigger=interval_trigger(1)
    )
    async def every_second(payload: Scheduled, io: IO, ctx: Context) -> dict[str, Any]:
        return {"ts": payload.ts.isoformat()}

    @endpoint.job(id="py-invoked", name="Invoked", version="1", trigger=invoke_trigger())
    async def invoked(payload: Any, io: IO, ctx: Context) -> dict[str, Any]:
        return {"invoked": payload}

    return endpoint


async def test_a_python_interval_job_runs_once_per_tick_and_an_invoked_one_when_invoked(
    stack: Stack,
) -> None:
    async with serve(stack, scheduled_endpoint(stack.env.api_key, api_url(stack))):

        async def ticked() -> bool:
            async with stack.jobs.client.pool.connection() as conn:
                cur = await conn.execute(
                    f'select count(*) from "{stack.jobs.client.schema}".job_runs'  # type: ignore[arg-type]
                    " where status = 'SUCCESS' and output ? 'ts'"
                )
                row = await cur.fetchone()
            return bool(row and row[0] >= 3)

        await wait_until(ticked, timeout=20)
        # an invokeTrigger job: no run for an event of its name, one when invoked
        event_id = await send(stack, "invoke", {"x": 1})
        invoked = await stack.api.post("/api/v1/jobs/py-invoked/invoke", json={"payload": {"x": 2}})
        run = await stack.run(invoked.json()["id"])
        assert run["output"] == {"invoked": {"x": 2}}
        assert await stack.runs_of_event(event_id) == []
