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
