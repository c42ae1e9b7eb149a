"""What an endpoint's EXECUTE_JOB answer means for the run (DESIGN.md, Jobs service step 3),
and that only the protocol's own fields, never an arbitrary body, reach the run's output."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from kongflow.service.execution import Outcome, interpret
from kongflow.service.outbound import Answer


def answer(status: int, body: Any) -> Answer:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, httpx.Headers({"content-type": "application/json"}), content)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"status": "SUCCESS", "output": {"n": 1}}, Outcome("SUCCESS", {"n": 1})),
        (200, {"status": "SUCCESS"}, Outcome("SUCCESS", None)),
        (
            200,
            {"status": "ERROR", "error": {"message": "boom", "name": "Error"}},
            Outcome("FAILURE", {"message": "boom", "name": "Error"}),
        ),
        (408, {}, Outcome("TIMED_OUT", {"message": "the endpoint answered HTTP 408"})),
        (504, {}, Outcome("TIMED_OUT", {"message": "the endpoint answered HTTP 504"})),
        (
            503,
            {"secret": "x"},
            Outcome("FAILURE", {"message": "the endpoint answered HTTP 503"}, retry=True),
        ),
        (
            404,
            {"db_password": "x"},
            Outcome("FAILURE", {"message": "the endpoint answered HTTP 404"}),
        ),
        (
            401,
            b"<html>nope</html>",
            Outcome("FAILURE", {"message": "the endpoint answered HTTP 401"}),
        ),
    ],
)
def test_each_answer_gives_its_outcome(status: int, body: Any, outcome: Outcome) -> None:
    got = interpret(answer(status, body))
    assert (got.status, got.retry) == (outcome.status, outcome.retry)
    if isinstance(outcome.output, dict) and "name" not in outcome.output:
        assert got.output == outcome.output
    else:
        assert isinstance(got.output, dict | None)
        if outcome.output is not None:
            assert got.output is not None
            assert {k: got.output[k] for k in outcome.output} == outcome.output  # type: ignore[index]


def test_a_malformed_answer_fails_without_echoing_it() -> None:
    got = interpret(answer(200, {"status": "WHATEVER", "secret": "s3cr3t"}))
    assert got.status == "FAILURE" and not got.retry
    assert "s3cr3t" not in json.dumps(got.output)
    assert "malformed" in json.dumps(got.output)
    assert interpret(answer(200, b"not json")).status == "FAILURE"


def test_invalid_payload_and_unresolved_auth() -> None:
    invalid = interpret(
        answer(200, {"status": "INVALID_PAYLOAD", "errors": [{"path": "a", "message": "bad"}]})
    )
    assert invalid.status == "INVALID_PAYLOAD"
    auth = interpret(answer(200, {"status": "UNRESOLVED_AUTH_ERROR", "issues": {}}))
    assert auth.status == "UNRESOLVED_AUTH"


def test_invalid_payload_with_the_node_sdks_list_paths() -> None:
    """trigger.dev's Node SDK sends zod's issue path, a list of keys (it used to end as
    FAILURE)."""
    errors = [{"path": ["address", "city"], "message": "Required"}]
    invalid = interpret(answer(200, {"status": "INVALID_PAYLOAD", "errors": errors}))
    assert (invalid.status, invalid.output) == ("INVALID_PAYLOAD", {"errors": errors})


TASK = {"id": "task_1", "name": "wait", "status": "WAITING", "noop": True}


def with_headers(body: Any, headers: dict[str, str]) -> Answer:
    return Answer(200, httpx.Headers(headers), json.dumps(body).encode())


def test_resume_and_retry_with_a_task_wait_on_it() -> None:
    resume = interpret(answer(200, {"status": "RESUME_WITH_TASK", "task": TASK}))
    assert (resume.status, resume.resume, resume.reexecute) == (
        "WAITING_TO_CONTINUE",
        ("task_1",),
        False,
    )
    retry = interpret(
        answer(
            200,
            {
                "status": "RETRY_WITH_TASK",
                "task": TASK,
                "error": {"message": "flaky"},
                "retryAt": "2026-12-01T10:00:00Z",
            },
        )
    )
    assert retry.status == "WAITING_TO_CONTINUE"
    (attempt,) = retry.retries
    assert (attempt.task_id, attempt.error, attempt.at.isoformat()) == (
        "task_1",
        "flaky",
        "2026-12-01T10:00:00+00:00",
    )


def test_yields_execute_again_at_once_or_at_the_rate_limits_reset() -> None:
    yielded = interpret(answer(200, {"status": "YIELD_EXECUTION", "key": "k"}))
    assert (yielded.status, yielded.reexecute, yielded.yielded) == ("WAITING_TO_EXECUTE", True, "k")
    auto = interpret(
        answer(
            200,
            {
                "status": "AUTO_YIELD_EXECUTION",
                "location": "x",
                "timeRemaining": 1,
                "timeElapsed": 2,
            },
        )
    )
    assert (auto.reexecute, auto.reexecute_at) == (True, None)
    limited = interpret(answer(200, {"status": "AUTO_YIELD_RATE_LIMIT", "reset": 1796119200000}))
    assert limited.reexecute_at is not None
    assert limited.reexecute_at.isoformat() == "2026-12-01T10:00:00+00:00"
    absurd = interpret(answer(200, {"status": "AUTO_YIELD_RATE_LIMIT", "reset": 1e300}))
    assert (absurd.reexecute, absurd.reexecute_at) == (True, None)  # at once, not never
    completed = interpret(
        answer(
            200,
            {
                "status": "AUTO_YIELD_EXECUTION_WITH_COMPLETED_TASK",
                "id": "task_1",
                "output": '{"n": 1}',
                "data": {"location": "x", "timeRemaining": 1, "timeElapsed": 2},
            },
        )
    )
    assert completed.completed_task is not None and completed.completed_task.id == "task_1"


def test_an_error_inside_a_task_fails_that_task() -> None:
    failed = interpret(
        answer(
            200,
            {"status": "ERROR", "error": {"message": "no"}, "task": TASK | {"status": "RUNNING"}},
        )
    )
    assert (failed.status, failed.failed_task) == ("FAILURE", "task_1")
    assert interpret(answer(200, {"status": "CANCELED", "task": TASK})).status == "CANCELED"


def test_parallel_children_wait_together_and_a_failed_child_fails_the_run() -> None:
    child = {"status": "RESUME_WITH_TASK", "task": TASK | {"id": "child"}}
    waiting = interpret(
        answer(
            200,
            {"status": "RESUME_WITH_PARALLEL_TASK", "task": TASK, "childErrors": [child, child]},
        )
    )
    assert (waiting.status, waiting.resume) == ("WAITING_TO_CONTINUE", ("child", "child"))
    failing = interpret(
        answer(
            200,
            {
                "status": "RESUME_WITH_PARALLEL_TASK",
                "task": TASK,
                "childErrors": [child, {"status": "ERROR", "error": {"message": "child failed"}}],
            },
        )
    )
    assert (failing.status, failing.output) == ("FAILURE", {"message": "child failed"})
    # nothing left to wait on: the run executes again rather than waiting for ever
    empty = interpret(
        answer(200, {"status": "RESUME_WITH_PARALLEL_TASK", "task": TASK, "childErrors": []})
    )
    assert (empty.status, empty.reexecute) == ("WAITING_TO_EXECUTE", True)


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        ('{"successSubscription": true}', {"SUCCESS"}),
        ('{"successSubscription": true, "failedSubscription": true}', {"SUCCESS", "FAILURE"}),
        ("{}", set()),
        ('{"successSubscription": "yes"}', set()),
        ("[1]", set()),
        ("not json", set()),
    ],
)
def test_run_metadata_asks_for_notifications(header: str, wanted: set[str]) -> None:
    body = {"status": "SUCCESS"}
    got = interpret(with_headers(body, {"x-trigger-run-metadata": header}))
    assert got.subscriptions == wanted


def test_a_retry_time_without_a_zone_is_a_malformed_answer() -> None:
    naive = {
        "status": "RETRY_WITH_TASK",
        "task": TASK,
        "error": {"message": "x"},
        "retryAt": "2026-12-01T10:00:00",
    }
    got = interpret(answer(200, naive))
    assert got.status == "FAILURE" and "malformed" in json.dumps(got.output)
