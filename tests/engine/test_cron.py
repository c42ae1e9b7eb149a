"""Cron: the crontab format, exactly-once ticks across workers, backfill, bad lines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kongflow import Client
from kongflow.engine.cron import CronItem, CronScheduler, CrontabError, parse_crontab
from kongflow.engine.sql import engine_sql

T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


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


async def _cron_jobs(client: Client) -> list[Any]:
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            f'select task_identifier, payload, run_at from "{client.schema}".jobs'  # type: ignore[arg-type]
            " order by run_at, id"
        )
        return await cur.fetchall()


async def test_each_tick_is_enqueued_once_with_three_schedulers(client: Client) -> None:
    items = parse_crontab('* * * * * every_minute\n*/2 * * * * every_other ?max=2 {"a": 1}')
    clock = Clock(T0)
    schedulers = [
        CronScheduler(client.pool, engine_sql(client.schema), items, clock) for _ in range(3)
    ]
    for scheduler in schedulers:
        await scheduler.start()
    for _ in range(4):  # four minutes go by; the three race for every tick
        clock.now += timedelta(minutes=1)
        await asyncio.gather(*(s.run_due() for s in schedulers))

    rows = await _cron_jobs(client)
    minutes = [T0.replace(second=0) + timedelta(minutes=m) for m in range(1, 5)]
    every = [r for r in rows if r[0] == "every_minute"]
    other = [r for r in rows if r[0] == "every_other"]
    assert [r[2] for r in every] == minutes
    assert [r[2] for r in other] == [m for m in minutes if m.minute % 2 == 0]
    assert other[0][1] == {"a": 1, "_cron": {"ts": minutes[1].isoformat(), "backfilled": False}}


async def test_fill_backfills_missed_ticks_of_known_items_only(client: Client) -> None:
    sql = engine_sql(client.schema)
    clock = Clock(T0)
    hourly = parse_crontab("0 * * * * hourly ?fill=3h")
    first = CronScheduler(client.pool, sql, hourly, clock)
    await first.start()  # now known; nothing to backfill for a new item
    assert await _cron_jobs(client) == []

    clock.now = T0 + timedelta(hours=5)  # every worker was down for five hours
    again = CronScheduler(client.pool, sql, hourly, clock)
    ids = await again.start()
    rows = await _cron_jobs(client)
    assert len(ids) == 3  # only the last three hours, per fill
    assert [r[2].hour for r in rows] == [15, 16, 17]
    assert all(r[1]["_cron"]["backfilled"] is True for r in rows)

    # a new item added later is not backfilled
    more = parse_crontab("0 * * * * hourly ?fill=3h\n0 * * * * other ?fill=3h")
    clock.now += timedelta(minutes=10)
    await CronScheduler(client.pool, sql, more, clock).start()
    assert [r[0] for r in await _cron_jobs(client)].count("other") == 0


def test_cron_item_objects() -> None:
    item = CronItem("0 0 * * *", "nightly", payload={"x": 1})
    assert item.identifier == "nightly"
    assert item.matches(datetime(2030, 5, 5, 0, 0, tzinfo=UTC))
    assert not item.matches(datetime(2030, 5, 5, 0, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="invalid cron pattern"):
        CronItem("0 0 * *", "bad")
