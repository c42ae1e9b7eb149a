"""Retry policies: graphile-worker's default backoff, fixed delays, jitter, functions."""

from __future__ import annotations

import math

import pytest

from kongflow import ExponentialBackoff, FixedBackoff, Task


def test_the_default_is_graphile_workers_backoff() -> None:
    policy = ExponentialBackoff()
    assert [policy.delay(n) for n in (1, 2, 10)] == [math.e, math.e**2, math.e**10]
    assert policy.delay(25) == math.e**10  # capped at exp(10)


def test_exponential_with_another_base_cap_and_jitter() -> None:
    policy = ExponentialBackoff(base=2, max_exponent=8)
    assert [policy.delay(n) for n in (1, 3, 8, 20)] == [2, 8, 256, 256]
    jittered = ExponentialBackoff(base=2, max_exponent=8, jitter=0.25)
    delays = {jittered.delay(4) for _ in range(200)}
    assert all(12 <= d <= 20 for d in delays)
    assert len(delays) > 1


def test_fixed_and_function_policies() -> None:
    assert FixedBackoff(10).delay(1) == FixedBackoff(10).delay(99) == 10

    def handler(payload: object, job: object) -> None: ...

    task = Task(handler, retry=lambda attempts: attempts * 1.5)
    assert task.retry_delay(4) == pytest.approx(6.0)
    assert Task(handler).retry_delay(1) == math.e
    assert Task(handler, retry=lambda attempts: -5).retry_delay(1) == 0  # never negative
