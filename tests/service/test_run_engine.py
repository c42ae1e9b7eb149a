"""The run engine's answers to what an endpoint says about its tasks, scripted: a yield
executes the run again (the key remembered), an answer about a task the run does not have
fails the run instead of leaving it waiting for ever, and so does yielding for ever."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from kongflow.service.catalog import ResumeTask
from tests.support.jobs_stack import Stack, jobs_stack, wait_until


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema) as stack:
        yield stack


async def yielded_executions(stack: Stack, run_id: str) -> list[str]:
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select yielded_executions from "{stack.jobs.client.schema}".job_runs'  # type: ignore[arg-type]
            " where id = %s",
            (run_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return list(row[0])


async def test_a_yield_executes_the_run_again_with_its_key(stack: Stack) -> None:
    stack.endpoint.answers = [(200, json.dumps({"status": "YIELD_EXECUTION", "key": "k1"}))]
    run = await stack.run(await stack.test("echo", {"n": 1}))
    assert (run["status"], run["output"]["echo"]) == ("SUCCESS", {"n": 1})
    assert (stack.endpoint.executions, run["executionCount"]) == (2, 2)
    assert await yielded_executions(stack, run["id"]) == ["k1"]
    assert await stack.statuses(run["id"]) == [
        "PENDING",
        "QUEUED",
        "EXECUTING",
        "WAITING_TO_EXECUTE",
        "EXECUTING",
        "SUCCESS",
    ]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            {"status": "RESUME_WITH_TASK", "task": {"id": "nope", "status": "WAITING"}},
            "waits on task 'nope'",
        ),
        (
            {
                "status": "RETRY_WITH_TASK",
                "task": {"id": "nope", "status": "RUNNING"},
                "error": {"message": "x"},
                "retryAt": "2026-01-01T00:00:00Z",
            },
            "retries task 'nope'",
        ),
        (
            {
                "status": "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
                "id": "nope",
                "output": "{not json",
                "data": {"location": "x", "timeRemaining": 1, "timeElapsed": 1},
            },
            "not JSON",
        ),
        (
            {
                "status": "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
                "id": "nope",
                "output": "1",
                "data": {"location": "x", "timeRemaining": 1, "timeElapsed": 1},
            },
            "failed to complete",
        ),
    ],
)
async def test_an_answer_about_a_task_the_run_has_not_got_fails_it(
    stack: Stack, answer: dict[str, object], message: str
) -> None:
    stack.endpoint.answers = [(200, json.dumps(answer))]
    run = await stack.run(await stack.test("echo"))
    assert run["status"] == "FAILURE"
    assert message in run["output"]["message"]
    assert stack.endpoint.executions == 1


async def test_a_run_that_yields_for_ever_is_stopped(database_url: str, schema: str) -> None:
    async with jobs_stack(database_url, schema, max_executions=4) as stack:
        auto_yield = {
            "status": "AUTO_YIELD_EXECUTION",
            "location": "x",
            "timeRemaining": 1,
            "timeElapsed": 1,
        }
        stack.endpoint.answers = [(200, json.dumps(auto_yield))] * 10
        run = await stack.run(await stack.test("echo"))
    assert run["status"] == "TIMED_OUT"
    assert "executed 4 times without finishing" in run["output"]["message"]
    assert stack.endpoint.executions == 4


async def test_a_waiting_operation_task_gets_its_operation_when_its_time_comes(
    stack: Stack,
) -> None:
    run_id = await stack.test("gate")
    await stack.executing(run_id)
    later = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    response = await stack.api.post(
        f"/api/v1/runs/{run_id}/tasks",
        json={"idempotencyKey": "f", "operation": "fetch", "delayUntil": later, "params": {}},
        headers={"idempotency-key": "f"},
    )
    task = response.json()
    assert task["status"] == "WAITING"
    await stack.jobs.tasks.resume_task(ResumeTask(id=task["id"]), None)  # type: ignore[arg-type]

    async def performed() -> bool:  # its fetch has no URL: it fails at once, but it ran
        again = await stack.api.post(
            f"/api/v1/runs/{run_id}/tasks",
            json={"idempotencyKey": "f"},
            headers={"idempotency-key": "f"},
        )
        return bool(again.json()["status"] == "ERRORED")

    await wait_until(performed)
    stack.release.set()
