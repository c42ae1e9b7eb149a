"""The crontab format: graphile-worker's lines, options, payloads, and the lines refused with
their line number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kongflow.engine.cron import CronItem, CrontabError, parse_crontab


def test_parses_graphile_crontab_lines() -> None:
    items = parse_crontab(
        """
        # a comment, then blank lines are ignored

        */5 * * * * send_digest
        0 4 * * 1 weekly ?id=weekly&fill=2d12h&max=3&queue=reports&priority=2 {"kind": "full"}
        30 2 1 * * rotate ?jobKey=rotate&jobKeyMode=preserve_run_at
        """
    )
    digest, weekly, rotate = items
    assert (digest.pattern, digest.task, digest.identifier, digest.payload) == (
        "*/5 * * * *",
        "send_digest",
        "send_digest",
        {},
    )
    assert weekly.identifier == "weekly"
    assert weekly.fill == timedelta(days=2, hours=12)
    assert (weekly.max_attempts, weekly.queue_name, weekly.priority) == (3, "reports", 2)
    assert weekly.payload == {"kind": "full"}
    assert (rotate.job_key, rotate.job_key_mode) == ("rotate", "preserve_run_at")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("* * * * task\n", 1, "expected"),
        ("\n\n61 * * * * task\n", 3, "invalid cron pattern"),
        ("* * * * * task ?bogus=1\n", 1, "unknown option"),
        ("* * * * * task ?fill=3x\n", 1, "duration"),
        ("* * * * * task ?max=lots\n", 1, "max must be an integer"),
        ("* * * * * task {not json}\n", 1, "not valid JSON"),
        ("* * * * * task [1, 2]\n", 1, "JSON object"),
        ("* * * * * task ?jobKeyMode=merge\n", 1, "jobKeyMode"),
        ("* * * * * a\n0 * * * * a\n", 2, "already used on line 1"),
        ("# max\n* * * * * task ?max=-1\n", 2, "max (max attempts) must be from 1 to 32767"),
        ("* * * * * task ?max=0\n", 1, "must be from 1"),
        ("* * * * * task ?priority=99999999999\n", 1, "priority must be a 32-bit integer"),
        ("\n* * * * * task ?id=a&id=b\n", 2, "given more than once: id"),
        ("* * * * * task ?id=a&queue=q&queue=r\n", 1, "given more than once: queue"),
        ("0 * * * * ok\n* * * * * ta\x00sk\n", 2, "NUL"),
        ('* * * * * task {"a": "\\u0000"}\n', 1, "NUL"),
        ("* * 31 2 * task\n", 1, "can never fire"),
        ("\n\n0 0 30 2 * task\n", 3, "can never fire"),
        ("0 0 31 4,6,9,11 * task\n", 1, "can never fire"),
        # a form feed is not a line break: the line numbers are the editor's
        ("# a \x0c comment\n* * 31 2 * task\n", 2, "can never fire"),
    ],
)
def test_bad_lines_are_rejected_with_their_number(text: str, line: int, message: str) -> None:
    with pytest.raises(CrontabError) as info:
        parse_crontab(text)
    assert info.value.line == line
    assert message in str(info.value)
    assert str(info.value).startswith(f"crontab line {line}:")


@pytest.mark.parametrize(
    "pattern", ["0 0 29 2 *", "0 0 31 2 1", "0 0 */30 2 *", "0 0 31 1-2 *", "0 0 L 2 *"]
)
def test_patterns_that_fire_rarely_are_accepted(pattern: str) -> None:
    """Leap days, a weekday with an impossible date (cron fires when either day field
    matches), a step that reaches day 1, a month range with a long month, the last day."""
    (item,) = parse_crontab(f"{pattern} task\n")
    assert item.pattern == pattern


def test_cron_item_objects() -> None:
    item = CronItem("0 0 * * *", "nightly", payload={"x": 1})
    assert item.identifier == "nightly"
    assert item.matches(datetime(2030, 5, 5, 0, 0, tzinfo=UTC))
    assert not item.matches(datetime(2030, 5, 5, 0, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="invalid cron pattern"):
        CronItem("0 0 * *", "bad")
