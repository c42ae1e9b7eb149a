"""A worker's options: one WorkerSettings, checked once, with errors naming the option."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kongflow import Worker, WorkerSettings
from kongflow.engine.cron import CronItem
from kongflow.engine.settings import queue_patterns


def noop(payload: Any, job: Any) -> None:
    return None


def test_heartbeat_must_fit_in_the_lease() -> None:
    with pytest.raises(ValueError, match="half the lease"):
        Worker("postgresql://unused", {"t": noop}, lease=2, heartbeat_interval=1.5)


def test_keywords_and_a_settings_object_configure_the_same_worker() -> None:
    by_keywords = Worker("postgresql://unused", {"t": noop}, concurrency=20, lease=9)
    by_settings = Worker(
        "postgresql://unused", {"t": noop}, settings=WorkerSettings(concurrency=20, lease=9)
    )
    assert by_keywords.settings == by_settings.settings
    assert (by_keywords.concurrency, by_keywords.lease, by_keywords.heartbeat_interval) == (
        20,
        9,
        3.0,
    )
    assert Worker("postgresql://unused", {"t": noop}).settings == WorkerSettings()


def test_keywords_apply_over_a_settings_object_and_are_checked_again() -> None:
    base = WorkerSettings(concurrency=4, queues=["a"])
    worker = Worker("postgresql://unused", {"t": noop}, settings=base, schema="other")
    assert (worker.settings.concurrency, worker.settings.queues, worker.schema) == (
        4,
        ("a",),
        "other",
    )
    assert base.schema != "other"  # the given settings are left as they were
    with pytest.raises(ValueError, match="concurrency"):
        Worker("postgresql://unused", settings=base, concurrency=0)


def test_settings_are_frozen() -> None:
    settings = WorkerSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.concurrency = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "concurrency must be at least 1, got 0"),
        ({"concurrency": 2.5}, TypeError, "concurrency must be an integer"),
        ({"concurrency": True}, TypeError, "concurrency must be an integer"),
        ({"poll_interval": 0}, ValueError, "poll_interval must be positive"),
        ({"poll_interval": "1"}, TypeError, "poll_interval must be a number of seconds"),
        ({"lease": -1}, ValueError, "lease must be positive"),
        ({"heartbeat_interval": 0}, ValueError, "heartbeat_interval must be positive"),
        ({"queues": "runs:*"}, TypeError, "queues must be a list of queue names"),
        ({"queue_limits": {"q": 0}}, ValueError, r"queue_limits\['q'\] must be an integer >= 1"),
        ({"queue_limits": {"q": "3"}}, ValueError, r"queue_limits\['q'\]"),
        ({"schema": "no spaces"}, ValueError, "schema"),
        ({"crontab": "* * * * *"}, ValueError, "crontab line 1"),
        ({"concurency": 3}, TypeError, "concurency"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        WorkerSettings(**options)
    with pytest.raises(error, match=match):
        Worker("postgresql://unused", {"t": noop}, **options)


def test_derived_values() -> None:
    settings = WorkerSettings(lease=60, queues=["runs:*", "a_b"])
    assert settings.heartbeat_seconds == 10.0  # a third of the lease, at most 10 s
    assert WorkerSettings(lease=6).heartbeat_seconds == 2.0
    assert WorkerSettings(lease=6, heartbeat_interval=1).heartbeat_seconds == 1
    assert settings.queue_patterns == ["runs:%", "a\\_b"]
    assert WorkerSettings().queue_patterns is None
    assert queue_patterns(["100%"]) == ["100\\%"]


def test_a_crontab_given_as_an_iterator_survives_replace() -> None:
    items = iter([CronItem("* * * * *", "t")])
    settings = WorkerSettings(crontab=items)
    again = dataclasses.replace(settings, concurrency=2)
    assert [i.task for i in settings.cron_items] == [i.task for i in again.cron_items] == ["t"]
    text = WorkerSettings(crontab="0 4 * * * t")
    assert [i.task for i in text.cron_items] == ["t"]
    assert text.crontab == "0 4 * * * t"
