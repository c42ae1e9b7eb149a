"""The jobs service end to end: the API under uvicorn, a real worker, an SDK endpoint and a
webhook receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from kongflow.protocol import SIGNATURE_HEADER
from kongflow.service.notifications import verify
from kongflow.service.registry import Registry
from kongflow.service.runs import TERMINAL, execution_key
from tests.support.jobs_stack import ENDPOINT_SLUG, Stack, jobs_stack, wait_until


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


async def test_a_tested_job_runs_to_success_with_the_endpoints_output(stack: Stack) -> None:
    response = await stack.api.post("/api/v1/jobs/echo/test", json={"payload": {"hi": 1}})
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "queued"
    assert answer["eventId"].startswith("test:test.echo:")
    run = await stack.run(answer["runId"])
    assert run["status"] == "SUCCESS"
    assert run["output"] == {"echo": {"hi": 1}, "isTest": True}
    assert (run["number"], run["executionCount"], run["isTest"]) == (1, 1, True)
    assert run["startedAt"] is not None and run["completedAt"] is not None
    assert await stack.statuses(run["id"]) == ["PENDING", "QUEUED", "EXECUTING", "SUCCESS"]


async def test_an_endpoint_error_fails_the_run_with_the_error(stack: Stack) -> None:
    run = await stack.run(await stack.test("boom"))
    assert run["status"] == "FAILURE"
    assert run["output"]["message"] == "the job blew up"
    assert run["output"]["name"] == "RuntimeError"
    assert stack.endpoint.executions == 1  # an ERROR answer is final, not retried


async def test_a_4xx_answer_fails_the_run_without_retrying(stack: Stack) -> None:
    stack.endpoint.answers = [(403, '{"message": "no"}')]
    run = await stack.run(await stack.test("echo"))
    assert run["status"] == "FAILURE"
    assert run["output"] == {"message": "the endpoint answered HTTP 403"}  # not its body
    assert stack.endpoint.executions == 1


async def test_5xx_then_success_retries_to_success(stack: Stack) -> None:
    stack.endpoint.answers = [(503, "{}"), (500, "{}")]
    run_id = await stack.test("echo", {"n": 2})
    run = await stack.run(run_id)
    assert run["status"] == "SUCCESS"
    assert run["executionCount"] == 3
    assert await stack.statuses(run_id) == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "WAITING_TO_EXECUTE",
        "EXECUTING",
        "WAITING_TO_EXECUTE",
        "EXECUTING",
        "SUCCESS",
    ]


async def test_an_endpoint_that_is_down_is_retried_then_fails(stack: Stack) -> None:
    async with stack.jobs.client.pool.connection() as conn, conn.transaction():
        await Registry(stack.jobs.client.schema).register_endpoint(
            conn, stack.env, ENDPOINT_SLUG, "http://127.0.0.1:9"
        )
    run_id = await stack.test("echo")
    run = await stack.run(run_id)
    assert run["status"] == "FAILURE"
    assert run["output"] == {"message": "could not reach the endpoint at http://127.0.0.1:9"}
    assert run["executionCount"] == 3  # execution_attempts
    statuses = await stack.statuses(run_id)
    assert statuses.count("WAITING_TO_EXECUTE") == 2
    assert statuses[-1] == "FAILURE"


async def test_a_malformed_answer_fails_the_run(stack: Stack) -> None:
    stack.endpoint.answers = [(200, '{"status": "GREAT"}')]
    run = await stack.run(await stack.test("echo"))
    assert run["status"] == "FAILURE"
    assert "malformed" in run["output"]["message"]


@pytest.mark.parametrize("code", [408, 504])
async def test_a_timeout_answer_times_the_run_out(stack: Stack, code: int) -> None:
    stack.endpoint.answers = [(code, "{}")]
    run = await stack.run(await stack.test("echo"))
    assert run["status"] == "TIMED_OUT"


async def test_an_endpoint_slower_than_the_request_timeout_times_the_run_out(
    database_url: str, schema: str
) -> None:
    async with jobs_stack(database_url, schema, request_timeout=1.0) as stack:
        run = await stack.run(await stack.test("slow"))
    assert run["status"] == "TIMED_OUT"
    assert "did not answer within 1.0s" in run["output"]["message"]


async def test_an_invalid_payload_ends_the_run_as_invalid_payload(stack: Stack) -> None:
    run = await stack.run(await stack.test("order", {"orderId": "not a number"}))
    assert run["status"] == "INVALID_PAYLOAD"
    assert [e["path"] for e in run["output"]["errors"]] == ["orderId"]


async def test_cancel_while_queued_means_it_never_executes(stack: Stack) -> None:
    async with stack.no_worker():  # the run stays QUEUED
        run_id = await stack.test("echo")
        response = await stack.api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELED"
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    run = await stack.run(run_id)
    assert run["status"] == "CANCELED"
    assert stack.endpoint.executions == 0
    assert await stack.statuses(run_id) == ["PENDING", "QUEUED", "CANCELED"]


async def test_cancel_while_executing_keeps_canceled_when_the_result_comes(
    stack: Stack,
) -> None:
    run_id = await stack.test("gate")

    await stack.executing(run_id)
    response = await stack.api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.json()["status"] == "CANCELED"
    stack.release.set()  # the endpoint now answers SUCCESS
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    run = await stack.run(run_id)
    assert (run["status"], run["output"]) == ("CANCELED", None)
    assert await stack.statuses(run_id) == ["PENDING", "QUEUED", "EXECUTING", "CANCELED"]


async def test_the_callback_is_signed_retried_while_down_and_delivered_once(
    stack: Stack,
) -> None:
    stack.receiver.failures = 2
    response = await stack.api.post(
        "/api/v1/jobs/echo/invoke",
        json={"payload": {"x": 1}, "options": {"callbackUrl": stack.receiver_url}},
    )
    assert response.status_code == 200
    run_id = response.json()["runId"]
    assert (await stack.run(run_id))["status"] == "SUCCESS"

    async def delivered() -> bool:
        return len(stack.receiver.received) == 1

    await wait_until(delivered)
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    await asyncio.sleep(0.3)  # time for a wrong second delivery to show up
    assert len(stack.receiver.received) == 1
    assert stack.receiver.attempts == 3
    body, headers = stack.receiver.received[0]
    assert verify(stack.env.api_key, body, headers[SIGNATURE_HEADER.lower()])
    assert not verify("tr_dev_" + "x" * 24, body, headers[SIGNATURE_HEADER.lower()])
    notification = json.loads(body)
    assert (notification["id"], notification["ok"], notification["status"]) == (
        run_id,
        True,
        "SUCCESS",
    )
    assert notification["output"] == {"echo": {"x": 1}, "isTest": False}


async def test_a_failed_run_calls_back_with_its_error(stack: Stack) -> None:
    response = await stack.api.post(
        "/api/v1/jobs/boom/invoke", json={"options": {"callbackUrl": stack.receiver_url}}
    )
    run_id = response.json()["runId"]
    assert (await stack.run(run_id))["status"] == "FAILURE"

    async def delivered() -> bool:
        return len(stack.receiver.received) == 1

    await wait_until(delivered)
    notification = json.loads(stack.receiver.received[0][0])
    assert (notification["ok"], notification["error"]["message"]) == (False, "the job blew up")


async def test_invoke_with_an_idempotency_key_returns_the_first_run(stack: Stack) -> None:
    responses = await asyncio.gather(
        *(
            stack.api.post(
                "/api/v1/jobs/echo/invoke",
                json={"payload": {"i": i}},
                headers={"idempotency-key": "order-42"},
            )
            for i in range(8)
        )
    )
    run_ids = {r.json()["runId"] for r in responses}
    assert len(run_ids) == 1
    assert [r.status_code for r in responses] == [200] * 8  # trigger.dev's SDK takes only 200
    (run_id,) = run_ids
    assert (await stack.run(run_id))["status"] == "SUCCESS"
    other = await stack.api.post("/api/v1/jobs/echo/invoke", headers={"idempotency-key": "b"})
    assert other.json()["runId"] != run_id


async def test_events_start_the_matching_jobs_only(stack: Stack) -> None:
    runs_of = stack.runs_of_event

    pro = await stack.api.post(
        "/api/v1/events",
        json={
            "event": {
                "id": "evt-pro",
                "name": "order.placed",
                "payload": {"orderId": 1, "plan": "pro"},
            }
        },
    )
    free = await stack.api.post(
        "/api/v1/events",
        json={"event": {"id": "evt-free", "name": "order.placed", "payload": {"orderId": 2}}},
    )
    other = await stack.api.post(
        "/api/v1/events", json={"event": {"name": "nobody.listens", "payload": {}}}
    )
    assert {pro.status_code, free.status_code, other.status_code} == {200}
    assert pro.json()["id"] == "evt-pro"

    async def dispatched() -> bool:
        return len(await runs_of("evt-pro")) == 2 and len(await runs_of("evt-free")) == 1

    await wait_until(dispatched)
    assert [slug for slug, _ in await runs_of("evt-pro")] == ["order", "pro-order"]
    assert [slug for slug, _ in await runs_of("evt-free")] == ["order"]
    assert await runs_of(other.json()["id"]) == []
    again = await stack.api.post(
        "/api/v1/events",
        json={"event": {"id": "evt-pro", "name": "order.placed", "payload": {"orderId": 9}}},
    )
    assert again.json()["payload"] == {"orderId": 1, "plan": "pro"}  # the first one stands
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    assert await runs_of("evt-pro") == [("order", "SUCCESS"), ("pro-order", "SUCCESS")]


async def test_a_delayed_event_is_delivered_at_its_time(stack: Stack) -> None:
    response = await stack.api.post(
        "/api/v1/events",
        json={
            "event": {"id": "later", "name": "order.placed", "payload": {"orderId": 3}},
            "options": {"deliverAfter": 1.5},
        },
    )
    assert response.status_code == 200
    event = response.json()
    assert event["deliveredAt"] is None
    deliver_at = datetime.fromisoformat(event["deliverAt"])
    assert deliver_at > datetime.fromisoformat(event["timestamp"]) + timedelta(seconds=1)
    await asyncio.sleep(0.5)
    assert await stack.runs_of_event("later") == []  # not yet

    async def delivered() -> bool:
        return len(await stack.runs_of_event("later")) == 1

    await wait_until(delivered)
    assert datetime.now(UTC) >= deliver_at - timedelta(seconds=0.1)


async def test_events_of_another_environment_start_nothing_here(stack: Stack) -> None:
    other = await stack.jobs.environments.ensure("acme", "web", "PRODUCTION")
    response = await stack.api.post(
        "/api/v1/events",
        json={"event": {"id": "prod-1", "name": "order.placed", "payload": {"orderId": 5}}},
        headers={"Authorization": f"Bearer {other.api_key}"},
    )
    assert response.status_code == 200
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    assert await stack.runs_of_event("prod-1") == []  # production has no endpoint yet


async def test_endpoints_are_listed_and_a_wrong_one_is_refused(stack: Stack) -> None:
    listed = (await stack.api.get("/api/v1/endpoints")).json()
    assert [(e["slug"], e["url"]) for e in listed] == [(ENDPOINT_SLUG, stack.endpoint_url)]
    assert listed[0]["indexedAt"] is not None
    wrong = await stack.api.post(
        "/api/v1/endpoints", json={"slug": "another-app", "url": stack.endpoint_url}
    )
    assert wrong.status_code == 422
    assert wrong.json()["error"] == (
        f"the endpoint at {stack.endpoint_url} refused PING as endpoint 'another-app': check "
        "that its id is that slug and that it has this environment's API key"
    )  # its own words ("Endpoint ID mismatch ...") are the endpoint's: they stay in the log
    down = await stack.api.post(
        "/api/v1/endpoints", json={"slug": "down", "url": "http://127.0.0.1:9"}
    )
    assert down.status_code == 422
    assert down.json()["error"] == "could not reach the endpoint at http://127.0.0.1:9"
    assert len((await stack.api.get("/api/v1/endpoints")).json()) == 1


async def test_requests_without_a_valid_key_or_for_another_environment(stack: Stack) -> None:
    run_id = await stack.test("echo")
    url = f"/api/v1/runs/{run_id}"
    no_key = await stack.api.get(url, headers={"Authorization": ""})
    assert no_key.status_code == 401
    assert "Bearer" in no_key.json()["error"]
    wrong = await stack.api.get(url, headers={"Authorization": "Bearer tr_dev_" + "a" * 24})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid API key")
    other = await stack.jobs.environments.ensure("other-org", "web")
    headers = {"Authorization": f"Bearer {other.api_key}"}
    assert (await stack.api.get(url, headers=headers)).status_code == 404
    assert (await stack.api.post(f"{url}/cancel", headers=headers)).status_code == 404
    assert (await stack.api.post("/api/v1/jobs/echo/test", headers=headers)).status_code == 404
    assert (await stack.api.get("/api/v1/endpoints", headers=headers)).json() == []
    assert (await stack.run(run_id))["status"] == "SUCCESS"  # untouched by the other env


async def test_bad_requests_get_clear_errors(stack: Stack) -> None:
    malformed = await stack.api.post(
        "/api/v1/jobs/echo/test",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "malformed JSON in the request body"
    not_object = await stack.api.post("/api/v1/jobs/echo/test", json={"payload": [1, 2]})
    assert not_object.status_code == 400
    assert "payload" in not_object.json()["error"]
    unknown = await stack.api.post("/api/v1/jobs/nope/test", json={})
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]
    no_name = await stack.api.post("/api/v1/events", json={"event": {"payload": {}}})
    assert no_name.status_code == 400
    assert "event.name" in no_name.json()["error"]
    assert (await stack.api.get("/api/v1/runs/nope")).status_code == 404
    no_route = await stack.api.get("/api/v1/nowhere")
    assert (no_route.status_code, no_route.json()) == (404, {"error": "Not Found"})
    health = await stack.api.get("/health", headers={"Authorization": ""})
    assert health.json() == {"status": "ok"}
    schema = await stack.api.get("/openapi.json")
    assert "/api/v1/jobs/{job_slug}/invoke" in schema.json()["paths"]


async def test_io_tasks_are_created_by_idempotency_key_then_completed_or_failed(
    database_url: str, schema: str
) -> None:
    # the run's execution stays open while the test makes some 50 requests: a patient timeout
    async with jobs_stack(database_url, schema, request_timeout=30.0) as stack:
        await _tasks_by_idempotency_key(stack)


async def _tasks_by_idempotency_key(stack: Stack) -> None:
    run_id = await stack.test("gate")
    await stack.executing(run_id)
    url = f"/api/v1/runs/{run_id}/tasks"

    async def task(key: str, version: str | None = "2023-09-29", **body: object) -> dict:
        headers = {"idempotency-key": key} | ({"trigger-version": version} if version else {})
        response = await stack.api.post(url, json={"idempotencyKey": key, **body}, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict = response.json()
        if version is None:
            return answer
        assert response.headers["trigger-version"] == "2023-09-29"
        return answer["task"]  # type: ignore[no-any-return]

    log = await task("k1", name="log", noop=True, description="x")
    assert (log["status"], log["attempts"], log["noop"]) == ("COMPLETED", 1, True)
    assert (await task("k1", name="log", noop=True))["id"] == log["id"]  # the same task again
    later = datetime.now(UTC) + timedelta(hours=1)
    wait = await task("k2", name="wait", noop=True, delayUntil=later.isoformat())
    assert wait["status"] == "WAITING"
    step = await task("k3", version=None, name="step")  # without the version: a bare task
    assert (step["status"], step["idempotencyKey"]) == ("RUNNING", "k3")
    done = await stack.api.post(
        f"{url}/{step['id']}/complete",
        json={"output": '{"n": 1}'},
        headers={"trigger-version": "2023-11-01"},
    )
    assert (done.json()["status"], done.json()["output"]) == ("COMPLETED", {"n": 1})
    failing = await task("k4", name="failing")
    failed = await stack.api.post(f"{url}/{failing['id']}/fail", json={"error": {"message": "no"}})
    assert (failed.json()["status"], failed.json()["output"]) == ("ERRORED", {"message": "no"})
    # a finished task stays as it is
    again = await stack.api.post(f"{url}/{failing['id']}/complete", json={"output": 1})
    assert again.json()["status"] == "ERRORED"

    missing = await stack.api.post(url, json={"idempotencyKey": "k5"})
    assert missing.status_code == 400 and "Idempotency-Key" in missing.json()["error"]
    open_step = await task("k7", name="step")
    bad_output = await stack.api.post(
        f"{url}/{open_step['id']}/complete",
        json={"output": "{nope"},
        headers={"trigger-version": "2023-11-01"},
    )
    assert bad_output.status_code == 400 and "not JSON" in bad_output.json()["error"]
    assert (await task("k7", name="step"))["status"] == "RUNNING"
    nowhere = await stack.api.post(f"{url}/no-such-task/complete", json={})
    assert nowhere.status_code == 404
    other_parent = await stack.api.post(
        url,
        json={"idempotencyKey": "k6", "parentId": "no-such-task"},
        headers={"idempotency-key": "k6"},
    )
    assert other_parent.status_code == 400
    deep = "[" * 100_000 + "]" * 100_000  # a JSON string: the body's depth check sees no nesting
    nested = await stack.api.post(
        f"{url}/{open_step['id']}/complete",
        json={"output": deep},
        headers={"trigger-version": "2023-11-01"},
    )
    assert nested.status_code == 400 and "too deeply" in nested.json()["error"]
    # a chain of subtasks deeper than an answer can nest is cut, not a 500
    parent = None
    for n in range(40):
        body = {"idempotencyKey": f"chain-{n}", "parentId": parent}
        response = await stack.api.post(url, json=body, headers={"idempotency-key": f"chain-{n}"})
        parent = response.json()["id"]
    tree = await stack.api.get(f"/api/v2/runs/{run_id}?subtasks=true&take=50")
    assert tree.status_code == 200
    depth, node = 0, next(t for t in tree.json()["tasks"] if t["id"] != log["id"] and t["subtasks"])
    while node["subtasks"]:
        depth, node = depth + 1, node["subtasks"][0]
    assert depth == 31  # MAX_TASK_DEPTH levels in all
    stack.release.set()
    assert (await stack.run(run_id))["status"] == "SUCCESS"


async def test_an_output_postgresql_cannot_store_fails_the_run(stack: Stack) -> None:
    run = await stack.run(await stack.test("nul"))
    assert run["status"] == "FAILURE"
    assert "could not be stored" in run["output"]["message"]
    assert stack.endpoint.executions == 1


async def test_a_run_whose_execution_died_is_failed_by_the_sweep(stack: Stack) -> None:
    async with stack.no_worker():
        run_id = await stack.test("echo")
        # The run was executing when its job failed for good (a worker killed on the last
        # attempt), an hour ago.
        assert await stack.jobs.client.remove_job(execution_key(run_id)) is not None
        await _last_changed_an_hour_ago(stack, run_id, status="EXECUTING")
        await stack.jobs.execution.fail_stalled_runs(None, None)  # type: ignore[arg-type]
    run = await stack.run(run_id)
    assert run["status"] == "FAILURE"
    assert "its execution job no longer exists" in run["output"]["message"]
    # a run whose execution is alive is left alone
    gated = await stack.test("gate")

    await stack.executing(gated)
    await _last_changed_an_hour_ago(stack, gated)
    await stack.jobs.execution.fail_stalled_runs(None, None)  # type: ignore[arg-type]
    assert (await stack.api.get(f"/api/v1/runs/{gated}")).json()["status"] == "EXECUTING"


async def _last_changed_an_hour_ago(stack: Stack, run_id: str, status: str | None = None) -> None:
    """Backdate a run's last change (and set its status, if given), as if it had stalled."""
    async with stack.jobs.client.pool.connection() as conn:
        await conn.execute(
            f'update "{stack.jobs.client.schema}".job_runs'  # type: ignore[arg-type]
            " set status = coalesce(%s, status), updated_at = now() - interval '1 hour'"
            " where id = %s",
            (status, run_id),
        )


async def test_an_idempotency_key_belongs_to_one_job(stack: Stack) -> None:
    first = await stack.api.post("/api/v1/jobs/echo/invoke", headers={"idempotency-key": "k"})
    assert first.status_code == 200
    other_job = await stack.api.post("/api/v1/jobs/boom/invoke", headers={"idempotency-key": "k"})
    assert other_job.status_code == 409
    assert "already used" in other_job.json()["error"]
    unknown = await stack.api.post("/api/v1/jobs/nope/invoke", headers={"idempotency-key": "k"})
    assert unknown.status_code == 404
    await stack.run(first.json()["runId"])
    again = await stack.api.post("/api/v1/jobs/echo/invoke", headers={"idempotency-key": "k"})
    assert (again.status_code, again.json()["status"]) == (200, "success")


async def test_input_postgresql_cannot_hold_and_oversized_input_are_refused(
    stack: Stack,
) -> None:
    nul = await stack.api.post("/api/v1/jobs/echo/test", json={"payload": {"a": "x\u0000"}})
    assert nul.status_code == 400
    assert nul.json()["error"].startswith("invalid input")
    assert (await stack.api.get("/api/v1/runs/a%00b")).status_code == 400
    far = await stack.api.post(
        "/api/v1/events", json={"event": {"name": "x"}, "options": {"deliverAfter": 1e300}}
    )
    assert far.status_code == 400
    big = await stack.api.post(
        "/api/v1/jobs/echo/test", json={"payload": {"blob": "x" * (2 * 1024 * 1024)}}
    )
    assert big.status_code == 413


async def test_register_job_records_a_job_sent_on_its_own(stack: Stack) -> None:
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select id from "{stack.jobs.client.schema}".endpoints'  # type: ignore[arg-type]
        )
        row = await cur.fetchone()
    assert row is not None
    await stack.jobs.queue.enqueue(
        "registerJob",
        {
            "endpointId": row[0],
            "job": {"id": "late", "name": "Late", "version": "2.0.0", "event": {"name": "l"}},
        },
    )
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    response = await stack.api.post("/api/v1/jobs/late/test")
    assert response.status_code == 202


@pytest.mark.slow
async def test_a_thousand_concurrent_test_submissions_all_finish(stack: Stack) -> None:
    limit = asyncio.Semaphore(50)

    async def submit(i: int) -> str:
        async with limit:
            return await stack.test("echo", {"i": i})

    run_ids = await asyncio.gather(*(submit(i) for i in range(1000)))
    assert len(set(run_ids)) == 1000
    schema = stack.jobs.client.schema

    async def outcomes() -> dict[str, int]:
        async with stack.jobs.client.pool.connection() as conn:
            cur = await conn.execute(
                f'select status, count(*) from "{schema}".job_runs group by status'  # type: ignore[arg-type]
            )
            return dict(await cur.fetchall())  # type: ignore[arg-type]

    async def all_terminal() -> bool:
        return set(await outcomes()) <= TERMINAL

    await wait_until(all_terminal, timeout=180)
    assert await outcomes() == {"SUCCESS": 1000}
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            "select count(distinct number), min(number), max(number),"  # type: ignore[arg-type]
            f" count(*) filter (where output = jsonb_build_object('echo', ev.payload,"
            f" 'isTest', true)) from \"{schema}\".job_runs r"
            f' join "{schema}".event_records ev on ev.id = r.event_id'
        )
        assert await cur.fetchone() == (1000, 1, 1000, 1000)
    for run_id in run_ids[:20]:  # and the API agrees
        assert (await stack.run(run_id))["status"] == "SUCCESS"


async def test_endpoints_register_in_each_form_trigger_dev_clients_send(stack: Stack) -> None:
    """The SDK's registerEndpoint sends {url, name}, trigger.dev's CLI {id, url}: both answer
    200 (the SDK retries anything else) and re-point the same endpoint."""
    for body in (
        {"url": stack.endpoint_url, "name": ENDPOINT_SLUG},
        {"id": ENDPOINT_SLUG, "url": stack.endpoint_url},
    ):
        response = await stack.api.post("/api/v1/endpoints", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["slug"] == ENDPOINT_SLUG
    assert len((await stack.api.get("/api/v1/endpoints")).json()) == 1


async def test_a_filter_in_the_node_sdks_trigger_rule_is_applied(stack: Stack) -> None:
    """trigger.dev's Node SDK sends a job's payload filter as `trigger.rule.payload`, with no
    `event.filter`: a job filtered on plan "pro" must not run for plan "free"."""
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select id from "{stack.jobs.client.schema}".endpoints'  # type: ignore[arg-type]
        )
        row = await cur.fetchone()
    assert row is not None
    rule = {"event": "order.placed", "source": "trigger.dev", "payload": {"plan": ["pro"]}}
    await stack.jobs.queue.enqueue(
        "registerJob",
        {
            "endpointId": row[0],
            "job": {
                "id": "node-pro",
                "name": "Node pro",
                "version": "1.0.0",
                "event": {"name": "order.placed", "source": "trigger.dev"},
                "trigger": {"type": "static", "title": "order.placed", "rule": rule},
            },
        },
    )
    assert stack.jobs.queue.worker is not None
    await stack.jobs.queue.worker.drain()
    for event_id, plan in (("node-free", "free"), ("node-pro", "pro")):
        response = await stack.api.post(
            "/api/v1/events",
            json={"event": {"id": event_id, "name": "order.placed", "payload": {"plan": plan}}},
        )
        assert response.status_code == 200

    async def dispatched() -> bool:
        pro, free = await stack.runs_of_event("node-pro"), await stack.runs_of_event("node-free")
        return len(pro) == 3 and len(free) >= 1

    await wait_until(dispatched)
    await stack.jobs.queue.worker.drain()  # every dispatch of both events has run
    assert "node-pro" in [slug for slug, _ in await stack.runs_of_event("node-pro")]
    assert "node-pro" not in [slug for slug, _ in await stack.runs_of_event("node-free")]
