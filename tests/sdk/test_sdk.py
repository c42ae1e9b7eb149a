"""The endpoint SDK, driven over HTTP as the jobs service drives it (no database)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from kongflow.protocol import RUN_JOB_RESPONSE, IndexEndpointResponse, RunJobBody
from kongflow.sdk import IO, Context, Endpoint, event_trigger
from kongflow.sdk.example import example_endpoint

API_KEY = "tr_dev_secret"
ENDPOINT_ID = "my-endpoint"


class Address(BaseModel):
    city: str


class Person(BaseModel):
    name: str
    address: Address


def make_endpoint() -> Endpoint:
    endpoint = Endpoint(id=ENDPOINT_ID, api_key=API_KEY)

    @endpoint.job(
        id="greet",
        name="Greet",
        version="2.1.0",
        trigger=event_trigger(
            "person.created", schema=Person, source="crm", filter={"name": ["Ada"]}
        ),
    )
    async def greet(payload: Person, io: IO, ctx: Context) -> dict[str, Any]:
        io.logger.info("greeting %s", payload.name)
        return {
            "hello": payload.name,
            "city": payload.address.city,
            "run": ctx.run_id,
            "test": ctx.is_test,
            "env": ctx.environment.slug,
            "job": f"{ctx.job_id}@{ctx.job_version}",
        }

    @endpoint.job(id="raw", name="Raw", version="1", trigger=event_trigger("raw.event"))
    async def raw(payload: Any, io: IO, ctx: Context) -> Any:
        return payload

    @endpoint.job(id="boom", name="Boom", version="1", trigger=event_trigger("boom"))
    async def boom(payload: Any, io: IO, ctx: Context) -> None:
        raise KeyError("no such thing")

    @endpoint.job(id="unserialisable", name="Bad output", version="1", trigger=event_trigger("x"))
    async def unserialisable(payload: Any, io: IO, ctx: Context) -> object:
        return object()

    @endpoint.job(id="nothing", name="Nothing", version="1", trigger=event_trigger("y"))
    async def nothing(payload: Any, io: IO, ctx: Context) -> None:
        return None

    return endpoint


def headers(action: str | None = None, key: str | None = API_KEY, **extra: str) -> dict[str, str]:
    result = dict(extra)
    if key is not None:
        result["x-trigger-api-key"] = key
    if action is not None:
        result["x-trigger-action"] = action
    return result


def run_body(job_id: str, payload: Any, *, version: str = "1") -> dict[str, Any]:
    return {
        "event": {
            "id": "evt_1",
            "name": "person.created",
            "payload": payload,
            "timestamp": "2024-05-01T12:00:00Z",
        },
        "job": {"id": job_id, "version": version},
        "run": {"id": "run_42", "isTest": True, "startedAt": "2024-05-01T12:00:01Z"},
        "environment": {"id": "env_1", "slug": "dev", "type": "DEVELOPMENT"},
        "organization": {"id": "org_1", "title": "Acme", "slug": "acme"},
        "project": {"id": "prj_1", "name": "Site", "slug": "site"},
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_endpoint().app)
    async with httpx.AsyncClient(transport=transport, base_url="http://endpoint") as client:
        yield client


async def execute(http: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await http.post("/", json=body, headers=headers("EXECUTE_JOB"))


# -- auth, method, action -----------------------------------------------------------------------


async def test_missing_api_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("PING", key=None))
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized: missing x-trigger-api-key header"}
    assert response.headers["content-type"] == "application/json"


async def test_wrong_api_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("PING", key="tr_dev_other"))
    assert response.status_code == 401
    assert response.json() == {
        "message": "Forbidden: client apiKey mismatch: Make sure you are using the correct "
        "API Key for your environment"
    }


async def test_non_ascii_api_key_is_refused_not_crashing(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers={b"x-trigger-api-key": "clé".encode("latin-1")})
    assert response.status_code == 401
    assert response.json()["message"].startswith("Forbidden")


async def test_other_methods_are_405(http: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await http.request(method, "/", headers=headers("PING"))
        assert response.status_code == 405, method
        assert response.json() == {"message": "Method not allowed (only POST is allowed)"}


async def test_auth_is_checked_before_the_method(http: httpx.AsyncClient) -> None:
    response = await http.get("/", headers=headers(key=None))
    assert response.status_code == 401


async def test_missing_action_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers())
    assert response.status_code == 400
    assert response.json() == {"message": "Missing x-trigger-action header"}


async def test_unknown_action_is_400_and_named(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("DELIVER_HTTP_SOURCE_REQUEST"))
    assert response.status_code == 400
    assert "DELIVER_HTTP_SOURCE_REQUEST" in response.json()["message"]


async def test_unknown_path_is_404_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/elsewhere", headers=headers("PING"))
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


# -- PING ---------------------------------------------------------------------------------------


async def test_ping_ok(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/", headers=headers("PING", **{"x-trigger-endpoint-id": ENDPOINT_ID})
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_ping_endpoint_id_mismatch(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("PING", **{"x-trigger-endpoint-id": "other"}))
    assert response.status_code == 200
    assert response.json() == {
        "ok": False,
        "error": f"Endpoint ID mismatch error. Expected {ENDPOINT_ID}, got other",
    }


async def test_ping_missing_endpoint_id(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("PING"))
    assert response.status_code == 200
    assert response.json() == {"ok": False, "error": "Missing endpoint ID"}


# -- INDEX_ENDPOINT -----------------------------------------------------------------------------


async def test_index_endpoint_describes_every_job(http: httpx.AsyncClient) -> None:
    response = await http.post("/", headers=headers("INDEX_ENDPOINT"))
    assert response.status_code == 200
    raw = response.json()
    assert raw["sources"] == [] and raw["dynamicTriggers"] == [] and raw["dynamicSchedules"] == []
    index = IndexEndpointResponse.model_validate(raw)
    jobs = {job.id: job for job in index.jobs}
    assert list(jobs) == ["greet", "raw", "boom", "unserialisable", "nothing"]

    greet = jobs["greet"]
    assert (greet.name, greet.version) == ("Greet", "2.1.0")
    assert greet.event.name == "person.created"
    assert greet.event.title == "person.created"
    assert greet.event.source == "crm"
    assert greet.event.icon == "custom-event"
    assert greet.event.filter == {"name": ["Ada"]}
    assert greet.trigger == {
        "type": "static",
        "title": "person.created",
        "rule": {"event": "person.created", "source": "crm", "payload": {"name": ["Ada"]}},
    }
    assert greet.integrations == {}
    assert (greet.internal, greet.enabled, greet.preprocess_runs) == (False, True, False)
    assert greet.start_position == "latest"

    raw_job = next(job for job in raw["jobs"] if job["id"] == "raw")
    assert "filter" not in raw_job["event"]
    assert raw_job["event"]["source"] == "trigger.dev"
    assert raw_job["trigger"]["rule"] == {"event": "raw.event", "source": "trigger.dev"}
    assert raw_job["startPosition"] == "latest" and raw_job["preprocessRuns"] is False


# -- EXECUTE_JOB --------------------------------------------------------------------------------


async def test_execute_success_returns_the_output(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {"name": "Ada", "address": {"city": "London"}}
    with caplog.at_level(logging.INFO, logger="kongflow.sdk"):
        response = await execute(http, run_body("greet", payload, version="2.1.0"))
    assert response.status_code == 200
    assert response.json() == {
        "status": "SUCCESS",
        "output": {
            "hello": "Ada",
            "city": "London",
            "run": "run_42",
            "test": True,
            "env": "dev",
            "job": "greet@2.1.0",
        },
    }
    [record] = [r for r in caplog.records if r.name == "kongflow.sdk"]
    assert record.getMessage() == "greeting Ada"
    assert record.__dict__["run_id"] == "run_42"
    assert record.__dict__["job_id"] == "greet"


async def test_execute_without_schema_passes_the_payload_as_is(http: httpx.AsyncClient) -> None:
    response = await execute(http, run_body("raw", [1, {"a": None}]))
    assert response.json() == {"status": "SUCCESS", "output": [1, {"a": None}]}


async def test_execute_none_output(http: httpx.AsyncClient) -> None:
    response = await execute(http, run_body("nothing", {}))
    assert response.status_code == 200
    assert response.json()["status"] == "SUCCESS"
    assert response.json().get("output") is None


async def test_execute_handler_error(http: httpx.AsyncClient) -> None:
    response = await execute(http, run_body("boom", {}))
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ERROR"
    assert answer["error"]["name"] == "KeyError"
    assert answer["error"]["message"] == "'no such thing'"
    assert "raise KeyError" in answer["error"]["stack"]
    assert RUN_JOB_RESPONSE.validate_python(answer).status == "ERROR"


async def test_execute_unserialisable_output_is_an_error(http: httpx.AsyncClient) -> None:
    answer = (await execute(http, run_body("unserialisable", {}))).json()
    assert answer["status"] == "ERROR"
    assert "not JSON-serialisable" in answer["error"]["message"]
    assert "'unserialisable'" in answer["error"]["message"]


async def test_execute_invalid_payload(http: httpx.AsyncClient) -> None:
    response = await execute(http, run_body("greet", {"name": "Ada", "address": {"city": 3}}))
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "INVALID_PAYLOAD"
    assert [e["path"] for e in answer["errors"]] == ["address.city"]
    assert "valid string" in answer["errors"][0]["message"]


async def test_execute_invalid_payload_reports_every_field(http: httpx.AsyncClient) -> None:
    answer = (await execute(http, run_body("greet", {"address": {}}))).json()
    assert answer["status"] == "INVALID_PAYLOAD"
    assert sorted(e["path"] for e in answer["errors"]) == ["address.city", "name"]
    assert {e["message"] for e in answer["errors"]} == {"Field required"}


async def test_execute_unknown_job_is_404(http: httpx.AsyncClient) -> None:
    response = await execute(http, run_body("missing", {}))
    assert response.status_code == 404
    assert response.json() == {"message": "Job not found"}


async def test_execute_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/", content=b"{not json", headers=headers("EXECUTE_JOB"))
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid execution"}


async def test_execute_wrong_body_shape_is_400(http: httpx.AsyncClient) -> None:
    body = run_body("greet", {})
    del body["run"]
    response = await execute(http, body)
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid execution"}


# -- definitions --------------------------------------------------------------------------------


def test_duplicate_job_id_is_refused() -> None:
    endpoint = make_endpoint()
    with pytest.raises(ValueError, match="'greet' is already defined"):

        @endpoint.job(id="greet", name="Again", version="1", trigger=event_trigger("z"))
        async def again(payload: Any, io: IO, ctx: Context) -> None:
            return None

    assert endpoint.jobs["greet"].name == "Greet"


def test_jobs_view_is_read_only() -> None:
    endpoint = make_endpoint()
    assert sorted(endpoint.jobs) == ["boom", "greet", "nothing", "raw", "unserialisable"]
    with pytest.raises(TypeError):
        endpoint.jobs["new"] = endpoint.jobs["greet"]  # type: ignore[index]


def test_a_sync_run_function_is_refused() -> None:
    endpoint = Endpoint(id=ENDPOINT_ID, api_key=API_KEY)
    with pytest.raises(TypeError, match="async def"):

        @endpoint.job(id="sync", name="Sync", version="1", trigger=event_trigger("s"))  # type: ignore[type-var]
        def sync(payload: Any, io: IO, ctx: Context) -> None:
            return None

    assert "sync" not in endpoint.jobs


def test_an_endpoint_needs_an_id_and_a_key() -> None:
    with pytest.raises(ValueError, match="api_key"):
        Endpoint(id=ENDPOINT_ID, api_key="")
    with pytest.raises(ValueError, match="id"):
        Endpoint(id="", api_key=API_KEY)


def test_context_from_body() -> None:
    ctx = Context.from_body(RunJobBody.model_validate(run_body("greet", {"a": 1})))
    assert ctx.run_id == "run_42"
    assert (ctx.is_test, ctx.is_retry) == (True, False)
    assert ctx.started_at.isoformat() == "2024-05-01T12:00:01+00:00"
    assert (ctx.job_id, ctx.job_version) == ("greet", "1")
    assert ctx.event.payload == {"a": 1}
    assert ctx.environment.type == "DEVELOPMENT"
    assert ctx.organization.slug == "acme"
    assert ctx.project is not None and ctx.project.slug == "site"


# -- the example endpoint -----------------------------------------------------------------------


@pytest.fixture
async def example() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=example_endpoint(API_KEY).app)
    async with httpx.AsyncClient(transport=transport, base_url="http://endpoint") as client:
        yield client


async def test_example_endpoint_index_and_ping(example: httpx.AsyncClient) -> None:
    ping = await example.post(
        "/", headers=headers("PING", **{"x-trigger-endpoint-id": "kongflow-example"})
    )
    assert ping.json() == {"ok": True}
    index = IndexEndpointResponse.model_validate(
        (await example.post("/", headers=headers("INDEX_ENDPOINT"))).json()
    )
    assert [(job.id, job.event.name) for job in index.jobs] == [
        ("hello-world", "example.hello"),
        ("count-words", "example.text"),
        ("wait-and-greet", "example.wait"),
    ]


async def test_example_hello_world(example: httpx.AsyncClient) -> None:
    answer = (await execute(example, run_body("hello-world", {"name": "Ada"}))).json()
    assert answer == {"status": "SUCCESS", "output": {"greeting": "Hello, Ada!"}}
    default = (await execute(example, run_body("hello-world", {}))).json()
    assert default == {"status": "SUCCESS", "output": {"greeting": "Hello, world!"}}
    no_payload = (await execute(example, run_body("hello-world", None))).json()
    assert no_payload == {"status": "SUCCESS", "output": {"greeting": "Hello, world!"}}


async def test_example_count_words(example: httpx.AsyncClient) -> None:
    body = run_body("count-words", {"text": "the quick  brown fox"})
    answer = (await execute(example, body)).json()
    assert answer == {"status": "SUCCESS", "output": {"words": 4, "characters": 20}}
    missing = (await execute(example, run_body("count-words", {}))).json()
    assert missing["status"] == "INVALID_PAYLOAD"
    assert missing["errors"] == [{"path": "text", "message": "Field required"}]
