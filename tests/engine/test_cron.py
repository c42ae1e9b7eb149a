"""Cron against the database: exactly-once ticks across schedulers, backfill (the crontab
format itself is tested in tests/unit/test_crontab.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from kongflow import Client
from kongflow.engine.cron import CronScheduler, parse_crontab
from kongflow.engine.sql import engine_sql

T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


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
