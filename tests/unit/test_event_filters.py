"""trigger.dev's event filters, as kongflow matches payloads against them."""

from __future__ import annotations

from typing import Any

import pytest

from kongflow.service.events import filter_matches

PAYLOAD = {
    "plan": "pro",
    "seats": 12,
    "trial": False,
    "email": "Ann@Example.com",
    "tags": ["a", "b"],
    "owner": {"country": "NL"},
    "items": [{"sku": "x"}, {"sku": "y"}],
    "note": None,
}


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ({}, True),
        ({"plan": ["pro", "team"]}, True),
        ({"plan": ["free"]}, False),
        ({"plan": []}, True),
        ({"seats": [12]}, True),
        ({"trial": [False]}, True),
        ({"trial": [0]}, False),  # a boolean is not a number
        ({"owner": {"country": ["NL"]}}, True),
        ({"owner": {"country": ["BE"]}}, False),
        ({"items": {"sku": ["y"]}}, True),  # any item of a list of objects
        ({"items": {"sku": ["z"]}}, False),
        ({"missing": ["x"]}, False),
        ({"email": [{"$endsWith": "@Example.com"}]}, True),
        ({"email": [{"$startsWith": "Bob"}]}, False),
        ({"email": [{"$ignoreCaseEquals": "ann@example.com"}]}, True),
        ({"seats": [{"$gt": 10}]}, True),
        ({"seats": [{"$lte": 11}]}, False),
        ({"seats": [{"$between": [10, 20]}]}, True),
        ({"seats": [{"$gt": "ten"}]}, False),  # a malformed operand matches nothing
        ({"tags": [{"$includes": "b"}]}, True),
        ({"plan": [{"$anythingBut": ["free"]}]}, True),
        ({"plan": [{"$anythingBut": "pro"}]}, False),
        ({"missing": [{"$exists": False}]}, True),
        ({"plan": [{"$exists": False}]}, False),
        ({"note": [{"$isNull": True}]}, True),
        ({"plan": [{"$isNull": True}]}, False),
        ({"plan": [{"$unknown": 1}]}, False),
        ({"plan": ["free", {"$startsWith": "p"}]}, True),  # any item of the list
    ],
)
def test_filters(pattern: dict[str, Any], matches: bool) -> None:
    assert filter_matches(PAYLOAD, pattern) is matches


def test_a_payload_that_is_not_an_object_matches_only_the_empty_filter() -> None:
    assert filter_matches([1], {}) is True
    assert filter_matches(None, {"a": ["b"]}) is False
