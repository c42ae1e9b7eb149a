"""The SDK's durable io without a database or a kongflow server: task identity, the noop bloom
filter and retry times as trigger.dev's Node SDK computes them; what an execution does with
what it was sent (cached tasks, the noop set, yielded executions, its time limit) before any
call to the API; how io's control flow becomes the endpoint's answer; and the run metadata
and run notifications over the endpoint's own HTTP app.

Runs against the real API and jobs service (tasks, waits, retries, cancellation, statuses,
the store, events, lazily loaded cached tasks, an API that fails) are in
tests/service/test_python_io.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import platformdirs
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kongflow.api import BackgroundServer
from kongflow.bloom import BloomFilter, murmur_hash3
from kongflow.protocol import RUN_JOB_RESPONSE, RunJobBody
from kongflow.sdk import (
    IO,
    Context,
    Endpoint,
    RetryOptions,
    ServerTask,
    TaskError,
    event_trigger,
)
from kongflow.sdk.api import json_text
from kongflow.sdk.example import example_endpoint
from kongflow.sdk.flow import (
    AutoYield,
    CanceledWithTask,
    RateLimited,
    ResumeWithTask,
    RetryWithTask,
    YieldExecution,
)
from kongflow.sdk.keys import display_key, idempotency_key, stable_stringify
from kongflow.sdk.retry import DEFAULT_RETRY_OPTIONS, calculate_retry_at, retry_delay_ms
from kongflow.sdk.store import namespaced_key

API_KEY = "tr_dev_io_secret"
RUN_ID = "run_1"


@pytest.fixture(autouse=True)
def no_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KONGFLOW_API_URL", "TRIGGER_API_URL"):
        monkeypatch.delenv(name, raising=False)


# -- what Node computes -------------------------------------------------------------------------


def node_root() -> Path | None:
    """An installed copy of trigger.dev's Node SDK 2.3.19, as tests/support/node_sdk.py
    installs it (in the cache; never installed here), if there is one."""
    if shutil.which("node") is None:
        return None
    cache = Path(os.environ.get("KONGFLOW_NODE_CACHE") or platformdirs.user_cache_dir("kongflow"))
    for root in sorted(cache.glob("node-*")):
        sdk = root / "node_modules" / "@trigger.dev" / "sdk" / "package.json"
        backend = root / "node_modules" / "@trigger.dev" / "core-backend" / "package.json"
        if sdk.exists() and backend.exists() and json.loads(sdk.read_text())["version"] == "2.3.19":
            return root
    return None


def node(script: str, data: Any) -> Any:
    root = node_root()
    if root is None:
        pytest.skip("trigger.dev's Node SDK is not installed (the Node SDK tests install it)")
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(data),
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


#: The Node SDK's generateIdempotencyKey and stableStringify (sdk/dist/index.js), verbatim.
NODE_KEYS = """
const crypto = require("crypto");
function stableStringify(obj) {
  function sortKeys(o) {
    if (typeof o !== "object" || o === null) return o;
    if (Array.isArray(o)) return o.map(sortKeys);
    const r = {};
    for (const k of Object.keys(o).sort()) r[k] = sortKeys(o[k]);
    return r;
  }
  return JSON.stringify(sortKeys(obj));
}
function generateIdempotencyKey(material) {
  const key = material.map((k) => (typeof k === "string" ? k : stableStringify(k))).join(":");
  return crypto.createHash("sha256").update(Buffer.from(key)).digest("hex");
}
const cases = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map(([run, parent, key]) => ({
  key: generateIdempotencyKey([run, parent ?? "", key].flat()),
  json: stableStringify(key),
}))));
"""

KEY_CASES: list[tuple[str, str | None, Any]] = [
    ("run_1", None, "compose"),
    ("run_1", "task_9", "compose"),
    ("run_1", None, ["greeting", "INFO"]),
    ("run_1", None, ["order", 42, {"b": [1, 2.5], "a": None}]),
    ("run_x", "", ["a", 1, 2.5, None, True, {"b": 1, "a": [1, {"z": 0, "y": 1e21}], "10": 1}]),
    ("run_x", None, ["héllo ✓ 😀", 1e-7, 0.1, 1.5e300, -0.0, 100.0, [[1, "two"]]]),
    ("r", None, [{"k": 'v\n"q\t\u0001', "9": 2, "B": 1, "a": 0}]),
]


def test_idempotency_keys_match_values_node_computed() -> None:
    assert idempotency_key("run_1", None, "compose") == (
        "dc0accd846d61b3eac1b1ba8052df871653cb37fef87d9354cf9abd23525401b"
    )
    assert idempotency_key("run_1", "task_9", "compose") == (
        "42992a123442b149a6569231d5d9d412932669492b4cbad7f20651736eb21198"
    )
    assert idempotency_key("run_1", None, ["greeting", "INFO"]) == (
        "191fb090d1f26854d2bd6c359f714e19ad4717ee9d945bee34f34b1e534edb81"
    )
    assert idempotency_key("run_1", None, ("order", 42, {"b": [1, 2.5], "a": None})) == (
        "45aee7417df5ec66d3506140b39e5a31f5224782fb59e5a4de9265df5fe2b4d8"
    )


def test_idempotency_keys_and_stable_json_match_node() -> None:
    expected = node(NODE_KEYS, KEY_CASES)
    for (run, parent, key), want in zip(KEY_CASES, expected, strict=True):
        assert idempotency_key(run, parent, key) == want["key"], key
        assert stable_stringify(key) == want["json"], key


def test_stable_stringify_is_javascripts_json() -> None:
    assert stable_stringify({"b": 1, "a": {"d": [3, 1.0], "c": None}}) == (
        '{"a":{"c":null,"d":[3,1]},"b":1}'
    )
    assert stable_stringify({"b": 0, "10": 0, "9": 0, "a": 0}) == '{"9":0,"10":0,"a":0,"b":0}'
    assert stable_stringify([1e21, 1e-7, 1e-6, 123.456, float("nan")]) == (
        "[1e+21,1e-7,0.000001,123.456,null]"
    )
    assert display_key(["a", 1, None, True]) == "a-1--true"
    assert display_key("plain") == "plain"


def test_a_cache_key_is_a_str_or_a_list() -> None:
    with pytest.raises(TypeError, match="cache key"):
        idempotency_key("run", None, 42)  # type: ignore[arg-type]


NODE_BLOOM = """
const { BloomFilter } = require("@trigger.dev/core-backend");
const items = JSON.parse(require("fs").readFileSync(0, "utf8"));
const filter = new BloomFilter(BloomFilter.NOOP_TASK_SET_SIZE);
items.forEach((item) => filter.add(item));
const other = BloomFilter.deserialize(filter.serialize(), BloomFilter.NOOP_TASK_SET_SIZE);
console.log(JSON.stringify({
  serialized: filter.serialize(),
  probes: ["absent", "compose", "é😀"].map((p) => other.test(p)),
}));
"""


def test_bloom_filter_matches_values_node_computed() -> None:
    bloom = BloomFilter()
    for item in ("a", "compose", idempotency_key("run_1", None, "compose")):
        bloom.add(item)
    raw = base64.b64decode(bloom.serialize())
    assert len(raw) == 4096
    assert [(i, b) for i, b in enumerate(raw) if b] == [(849, 8), (2803, 4), (2906, 128)]
    copy = BloomFilter.deserialize(bloom.serialize())
    assert "compose" in copy and "a" in copy and "b" not in copy


def test_bloom_filter_matches_core_backend() -> None:
    items = [idempotency_key(f"run_{i}", None, f"step-{i}") for i in range(300)]
    items += ["compose", "é😀", ""]
    expected = node(NODE_BLOOM, items)
    bloom = BloomFilter()
    for item in items:
        bloom.add(item)
    assert bloom.serialize() == expected["serialized"]
    copy = BloomFilter.deserialize(expected["serialized"])
    assert ["absent" in copy, "compose" in copy, "é😀" in copy] == expected["probes"]
    assert all(item in copy for item in items)


def test_murmur_hash_is_53_bits() -> None:
    assert 0 <= murmur_hash3("compose") < 2**53
    assert murmur_hash3("compose") != murmur_hash3("compose", seed=1)


def test_retry_times_are_calculate_retry_at_without_randomness() -> None:
    # Values calculateRetryAt gives (now subtracted), attempts 0 to 10.
    plain = RetryOptions(randomize=False)
    assert [retry_delay_ms(plain, a) for a in range(11)] == [1000, 1000, 1800, 3240] + [None] * 7
    short = RetryOptions(randomize=False, limit=3, factor=2, min_timeout_in_ms=100)
    assert [retry_delay_ms(short, a) for a in range(4)] == [100, 100, None, None]
    capped = RetryOptions(
        randomize=False, max_timeout_in_ms=5000, factor=3.3, min_timeout_in_ms=0.4, limit=10
    )
    assert [retry_delay_ms(capped, a) for a in range(11)] == [
        *(1, 1, 3, 11, 36, 119, 391, 1291, 4262),
        *(None, None),
    ]
    assert retry_delay_ms(RetryOptions(randomize=False, limit=2000, factor=10), 1500) == 60000
    now = datetime(2024, 5, 1, tzinfo=UTC)
    assert calculate_retry_at(plain, 2, now=now) == now + timedelta(milliseconds=1800)
    assert calculate_retry_at(plain, 4, now=now) is None


def test_randomized_retry_times_are_up_to_twice_as_long() -> None:
    delays = {retry_delay_ms(DEFAULT_RETRY_OPTIONS, 2) for _ in range(50)}
    assert all(d is not None and 1800 <= d <= 3600 for d in delays)
    assert len(delays) > 1


def test_retry_options_go_on_the_wire_as_given() -> None:
    assert RetryOptions(limit=3, min_timeout_in_ms=100).wire() == {
        "limit": 3,
        "minTimeoutInMs": 100,
    }


def test_store_keys_are_namespaced_as_node_does() -> None:
    assert namespaced_key(None, "", "k") == "k"
    assert namespaced_key("job", "my-job", "k") == "job:my-job:k"
    assert namespaced_key("run", "run_1", "a:b") == "run:run_1:a:b"


# -- runs without a server -----------------------------------------------------------------------


def body_for(job_id: str, payload: Any = None, **extra: Any) -> RunJobBody:
    raw: dict[str, Any] = {
        "event": {
            "id": "evt_1",
            "name": "test",
            "payload": payload,
            "timestamp": "2024-05-01T12:00:00Z",
        },
        "job": {"id": job_id, "version": "1.0.0"},
        "run": {"id": RUN_ID, "isTest": False, "startedAt": "2024-05-01T12:00:01Z"},
        "environment": {"id": "env_1", "slug": "dev", "type": "DEVELOPMENT"},
        "organization": {"id": "org_1", "title": "Acme", "slug": "acme"},
        **extra,
    }
    return RunJobBody.model_validate(raw)


async def execute(endpoint: Endpoint, job_id: str, payload: Any = None, **extra: Any) -> Any:
    """An execution's answer, as the server reads it (wire JSON)."""
    answer = await endpoint.execute(
        endpoint.jobs[job_id], body_for(job_id, payload, **extra), server_version="2023-09-29"
    )
    wire = answer.wire()
    RUN_JOB_RESPONSE.validate_python(wire)
    return wire


def key_of(display: str) -> str:
    return idempotency_key(RUN_ID, None, display)


async def test_logging_without_an_api_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint("app", API_KEY)

    @endpoint.job(id="quiet", name="Quiet", version="1.0.0", trigger=event_trigger("q"))
    async def quiet(payload: Any, io: IO, ctx: Context) -> str:
        await io.logger.info("just %s", "here")
        return "ok"

    with caplog.at_level("INFO", logger="kongflow.sdk"):
        assert (await execute(endpoint, "quiet"))["output"] == "ok"
    [record] = [r for r in caplog.records if r.name == "kongflow.sdk"]
    assert record.getMessage() == "just here" and record.__dict__["run_id"] == RUN_ID
    assert record.funcName == "quiet"


async def test_io_without_an_api_url_says_how_to_give_one() -> None:
    endpoint = Endpoint("app", API_KEY)

    @endpoint.job(id="lost", name="Lost", version="1.0.0", trigger=event_trigger("l"))
    async def lost(payload: Any, io: IO, ctx: Context) -> None:
        await io.wait("pause", 1)

    answer = await execute(endpoint, "lost")
    assert answer["status"] == "ERROR"
    assert "KONGFLOW_API_URL" in answer["error"]["message"]
    assert "TRIGGER_API_URL" in answer["error"]["message"]


def test_the_api_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_API_URL", "http://trigger:3030/")
    assert Endpoint("app", API_KEY).api_url == "http://trigger:3030"
    monkeypatch.setenv("KONGFLOW_API_URL", "http://kongflow:8030")
    assert Endpoint("app", API_KEY).api_url == "http://kongflow:8030"
    assert Endpoint("app", API_KEY, api_url="http://given").api_url == "http://given"


async def test_yield_ends_the_execution_once_per_key() -> None:
    endpoint = Endpoint("app", API_KEY)

    @endpoint.job(id="yields", name="Yields", version="1.0.0", trigger=event_trigger("y"))
    async def yields(payload: Any, io: IO, ctx: Context) -> str:
        io.yield_("first")
        io.yield_("second")
        return "through"

    assert await execute(endpoint, "yields") == {"status": "YIELD_EXECUTION", "key": "first"}
    again = await execute(endpoint, "yields", yieldedExecutions=["first"])
    assert again == {"status": "YIELD_EXECUTION", "key": "second"}
    done = await execute(endpoint, "yields", yieldedExecutions=["first", "second"])
    assert done["output"] == "through"
    old_server = await endpoint.execute(endpoint.jobs["yields"], body_for("yields"))
    assert old_server.wire()["output"] == "through"  # no version: yield is not supported


async def test_out_of_time_the_execution_yields_before_calling_the_api() -> None:
    endpoint = Endpoint("app", API_KEY)  # no API: a call would fail the run

    @endpoint.job(id="slow", name="Slow", version="1.0.0", trigger=event_trigger("s"))
    async def slow(payload: Any, io: IO, ctx: Context) -> None:
        await io.wait("pause", 1)

    answer = await execute(endpoint, "slow", runChunkExecutionLimit=100)
    assert answer["status"] == "AUTO_YIELD_EXECUTION"
    assert answer["location"] == "start_task" and answer["limit"] == 100
    assert answer["timeRemaining"] < 500


async def test_a_replayed_execution_takes_what_it_was_sent() -> None:
    endpoint = example_endpoint(API_KEY)  # no API: a call would fail the run
    payload = {"name": "Ada", "seconds": 30}
    cached = [
        {"id": key_of("compose"), "idempotencyKey": key_of("compose"), "status": "COMPLETED",
         "output": "Hello, Ada!"},
        {"id": key_of("finish"), "idempotencyKey": key_of("finish"), "status": "COMPLETED",
         "output": {"greeting": "from the cache"}},
    ]  # fmt: skip
    noops = BloomFilter()
    noops.add(key_of("pause"))  # the wait, done
    answer = await execute(
        endpoint, "wait-and-greet", payload, tasks=cached, noopTasksSet=noops.serialize()
    )
    assert answer == {"status": "SUCCESS", "output": {"greeting": "from the cache"}}
    # Without the wait in the noop set, io asks the API for it.
    asked = await execute(endpoint, "wait-and-greet", payload, tasks=cached)
    assert asked["status"] == "ERROR" and "KONGFLOW_API_URL" in asked["error"]["message"]


def test_task_output_is_written_as_javascript_would() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    assert json_text({"when": when, "é": [1, float("nan"), float("inf")]}) == (
        '{"when":"2024-01-01T00:00:00Z","é":[1,null,null]}'
    )


# -- the endpoint's answers ---------------------------------------------------------------------


def a_task(**fields: Any) -> ServerTask:
    return ServerTask.model_validate(
        {"id": "task_7", "name": "T", "noop": False, "status": "WAITING",
         "idempotencyKey": "k", "attempts": 1, **fields}
    )  # fmt: skip


RETRY_AT = datetime(2030, 1, 1, tzinfo=UTC)
FLOWS: list[tuple[BaseException, dict[str, Any]]] = [
    (ResumeWithTask(a_task()), {"status": "RESUME_WITH_TASK"}),
    (
        RetryWithTask(a_task(status="RUNNING"), TaskError(a_task()).error, RETRY_AT),
        {"status": "RETRY_WITH_TASK", "retryAt": "2030-01-01T00:00:00Z"},
    ),
    (CanceledWithTask(a_task(status="CANCELED")), {"status": "CANCELED"}),
    (YieldExecution("here"), {"status": "YIELD_EXECUTION", "key": "here"}),
    (AutoYield("start_task", 12.5, 900.0, 1000), {"status": "AUTO_YIELD_EXECUTION"}),
    (RateLimited(1700000000000), {"status": "AUTO_YIELD_RATE_LIMIT", "reset": 1700000000000}),
]


@pytest.mark.parametrize(("flow", "expected"), FLOWS)
async def test_control_flow_becomes_its_answer(
    flow: BaseException, expected: dict[str, Any]
) -> None:
    endpoint = Endpoint("app", API_KEY)

    @endpoint.job(id="flow", name="Flow", version="1.0.0", trigger=event_trigger("f"))
    async def run(payload: Any, io: IO, ctx: Context) -> None:
        try:
            raise flow
        except Exception:  # a job's own handler does not see it
            pytest.fail("ControlFlow is not an Exception")

    answer = await execute(endpoint, "flow")
    assert answer.items() >= expected.items()
    if "task" in answer:
        assert answer["task"]["id"] == "task_7"
        assert answer["task"]["idempotencyKey"] == "k"  # the task as the server sent it


async def test_control_flow_inside_a_task_group_is_answered() -> None:
    endpoint = Endpoint("app", API_KEY)

    @endpoint.job(id="group", name="Group", version="1.0.0", trigger=event_trigger("g"))
    async def group(payload: Any, io: IO, ctx: Context) -> None:
        async def wait() -> None:
            raise ResumeWithTask(a_task())

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(wait())

    assert (await execute(endpoint, "group"))["status"] == "RESUME_WITH_TASK"


async def test_a_stored_task_error_is_the_runs_error() -> None:
    endpoint = Endpoint("app", API_KEY)
    stored = {"message": "boom", "name": "RuntimeError", "stack": "trace"}

    @endpoint.job(id="err", name="Err", version="1.0.0", trigger=event_trigger("e"))
    async def err(payload: Any, io: IO, ctx: Context) -> None:
        raise TaskError(a_task(status="ERRORED", output=stored))

    answer = await execute(endpoint, "err")
    assert answer["error"] == stored
    assert answer["task"]["status"] == "ERRORED"
    odd = TaskError(a_task(status="ERRORED", output=[1, 2]))
    assert odd.error.message == "[1, 2]"


# -- over HTTP: the run metadata header and run notifications ---------------------------------


@pytest.fixture
def hooked() -> tuple[Endpoint, list[tuple[str, dict[str, Any]]]]:
    endpoint = Endpoint("app", API_KEY)
    heard: list[tuple[str, dict[str, Any]]] = []

    async def succeeded(notification: dict[str, Any]) -> None:
        heard.append(("success", notification))

    async def failed(notification: dict[str, Any]) -> None:
        heard.append(("failure", notification))

    @endpoint.job(
        id="hooked",
        name="Hooked",
        version="1.0.0",
        trigger=event_trigger("h"),
        on_success=succeeded,
        on_failure=failed,
    )
    async def run(payload: Any, io: IO, ctx: Context) -> str:
        return "ok"

    @endpoint.job(
        id="half", name="Half", version="1.0.0", trigger=event_trigger("x"), on_failure=failed
    )
    async def half(payload: Any, io: IO, ctx: Context) -> str:
        return "ok"

    @endpoint.job(id="plain", name="Plain", version="1.0.0", trigger=event_trigger("p"))
    async def plain(payload: Any, io: IO, ctx: Context) -> str:
        return "ok"

    return endpoint, heard


async def post(endpoint: Endpoint, action: str, body: Any, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=endpoint.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://endpoint") as http:
        return await http.post(
            "/",
            json=body,
            headers={"x-trigger-api-key": API_KEY, "x-trigger-action": action, **headers},
        )


async def test_the_answer_says_which_run_ends_the_job_wants_to_hear_of(
    hooked: tuple[Endpoint, list[Any]],
) -> None:
    endpoint, _ = hooked
    for job_id, metadata in (
        ("hooked", {"successSubscription": True, "failedSubscription": True}),
        ("half", {"failedSubscription": True}),
        ("plain", {}),
    ):
        body = body_for(job_id).wire()
        response = await post(endpoint, "EXECUTE_JOB", body, **{"x-trigger-version": "2023-09-29"})
        assert response.json() == {"status": "SUCCESS", "output": "ok"}
        assert json.loads(response.headers["x-trigger-run-metadata"]) == metadata
        assert response.headers["trigger-version"] == "2023-09-29"


async def test_run_notifications_call_the_hooks(hooked: tuple[Endpoint, list[Any]]) -> None:
    endpoint, heard = hooked
    success = {"id": RUN_ID, "ok": True, "status": "SUCCESS", "output": "ok",
               "job": {"id": "hooked", "version": "1.0.0"}}  # fmt: skip
    failure = {**success, "ok": False, "status": "FAILURE", "error": {"message": "x"}}
    response = await post(endpoint, "RUN_NOTIFICATION", success)
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert (await post(endpoint, "RUN_NOTIFICATION", failure)).json() == {"ok": True}
    plain = {**success, "job": {"id": "plain", "version": "1.0.0"}}
    assert (await post(endpoint, "RUN_NOTIFICATION", plain)).json() == {"ok": True}
    assert heard == [("success", success), ("failure", failure)]

    unknown = await post(endpoint, "RUN_NOTIFICATION", {**success, "job": {"id": "nope"}})
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Job not found"})
    garbage = await post(endpoint, "RUN_NOTIFICATION", "not an object")
    assert garbage.status_code == 404


async def test_a_failing_hook_is_a_500(hooked: tuple[Endpoint, list[Any]]) -> None:
    endpoint = Endpoint("app", API_KEY)

    async def broken(notification: dict[str, Any]) -> None:
        raise RuntimeError("hook down")

    @endpoint.job(id="j", name="J", version="1.0.0", trigger=event_trigger("j"), on_success=broken)
    async def run(payload: Any, io: IO, ctx: Context) -> None:
        return None

    response = await post(endpoint, "RUN_NOTIFICATION", {"ok": True, "job": {"id": "j"}})
    assert response.status_code == 500
    assert "hook down" in response.json()["message"]


def test_hooks_must_be_async() -> None:
    endpoint = Endpoint("app", API_KEY)
    with pytest.raises(TypeError, match="on_success"):

        @endpoint.job(
            id="j",
            name="J",
            version="1.0.0",
            trigger=event_trigger("j"),
            on_success=lambda n: None,  # type: ignore[arg-type,return-value]
        )
        async def run(payload: Any, io: IO, ctx: Context) -> None:
            return None


# -- against a loopback API ----------------------------------------------------------------------


async def test_executions_share_one_kept_alive_connection_to_the_api() -> None:
    """Each execution used to make an HTTP client of its own, tens of milliseconds each (its TLS
    context), and a new connection: the endpoint keeps one client, and its connections."""
    peers: list[tuple[str, int]] = []

    async def tasks(request: Request) -> JSONResponse:
        client = request.client
        assert client is not None
        peers.append((client.host, client.port))
        body = await request.json()
        done = request.url.path.endswith("/complete")
        return JSONResponse(
            {
                "id": f"task-{len(peers)}",
                "name": "step",
                "noop": False,
                "status": "COMPLETED" if done else "RUNNING",
                "idempotencyKey": body.get("idempotencyKey", "k"),
                "attempts": 1,
                "output": body.get("output"),
            }
        )

    api = Starlette(
        routes=[
            Route("/api/v1/runs/{run}/tasks", tasks, methods=["POST"]),
            Route("/api/v1/runs/{run}/tasks/{task}/complete", tasks, methods=["POST"]),
        ]
    )
    async with BackgroundServer(api) as server:
        endpoint = Endpoint("app", API_KEY, api_url=server.url)

        @endpoint.job(id="step", name="Step", version="1", trigger=event_trigger("step"))
        async def step(payload: Any, io: IO, ctx: Context) -> Any:
            return await io.run_task("one", lambda task: asyncio.sleep(0, "done"))

        for _ in range(3):
            answer = await endpoint.execute(endpoint.jobs["step"], body_for("step"))
            assert answer.wire()["status"] == "SUCCESS"
        await endpoint.aclose()
    assert len(peers) == 6  # a create and a complete per execution
    assert len(set(peers)) == 1
