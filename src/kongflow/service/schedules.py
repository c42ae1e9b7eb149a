"""Scheduled jobs (trigger.dev's intervalTrigger and cronTrigger): each tick starts one run.

A job version whose trigger is scheduled gets a schedule when it is indexed; the latest version
of a job is the one that fires, and a job its endpoint no longer lists stops. Each tick is an
`events.deliverScheduled` job keyed by its schedule (one pending tick per schedule, however
many workers run); it stores the tick's event under an id made of the schedule and the tick's
time, so a retried tick never starts a second run, and queues the next tick in the same
transaction. Ticks missed while nothing ran are not made up: the first one after fires at
once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter
from psycopg.rows import class_row, scalar_row

from kongflow.engine.tasks import RunningJob
from kongflow.protocol import MAX_INTERVAL_SECONDS, JobMetadata, is_cron_line, is_interval
from kongflow.service.catalog import DeliverScheduled, ScheduledPayload
from kongflow.service.database import Database
from kongflow.service.environments import Environment
from kongflow.service.rows import JobVersion, Schedule
from kongflow.service.runs import NewEvent, RunService
from kongflow.typed import Transaction, WorkerQueue
from kongflow.typed.task import TypedHandler

log = logging.getLogger("kongflow.schedules")

SCHEDULED_EVENT = "trigger.scheduled"


@dataclass(frozen=True)
class ScheduleSpec:
    kind: str  # "interval" or "cron"
    expression: str  # seconds, or the cron line

    def next_tick(self, after: datetime) -> datetime:
        if self.kind == "interval":
            return after + timedelta(seconds=int(self.expression))
        tick: datetime = croniter(self.expression, after).get_next(datetime)
        return tick


def schedule_of(job: JobMetadata) -> ScheduleSpec | None:
    """The job's schedule, or None if its trigger is not a (valid) schedule. An invalid one
    is logged: indexing has no one else to tell."""
    trigger = job.trigger or {}
    schedule = trigger.get("schedule") if trigger.get("type") == "scheduled" else None
    if not isinstance(schedule, dict):
        return None
    options: Any = schedule.get("options") or {}
    if schedule.get("type") == "interval":
        seconds = options.get("seconds") if isinstance(options, dict) else None
        if is_interval(seconds):
            return ScheduleSpec("interval", str(seconds))
        log.warning(
            "job %r: interval %r is not a whole number of seconds from 1 to %d; not scheduled",
            job.id,
            seconds,
            MAX_INTERVAL_SECONDS,
        )
        return None
    if schedule.get("type") == "cron":
        line = options.get("cron") if isinstance(options, dict) else None
        if is_cron_line(line):
            return ScheduleSpec("cron", line)
        log.warning("job %r: %r is not a 5-field cron line; not scheduled", job.id, line)
    return None


def tick_key(schedule_id: str) -> str:
    """The job key of a schedule's next tick: one pending tick per schedule."""
    return f"schedule:{schedule_id}"


class ScheduleService:
    def __init__(self, queue: WorkerQueue, database: Database, runs: RunService) -> None:
        self.queue = queue
        self.runs = runs
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {DeliverScheduled.task: self.deliver_tick}

    async def register(
        self, tx: Transaction, job_id: str, version_id: str, environment_id: str, job: JobMetadata
    ) -> None:
        """After indexing a job version: it alone of its job's versions is scheduled, if its
        trigger is a schedule and it is enabled. An unchanged schedule keeps its next tick (or
        gets one, if its tick job is gone)."""
        conn = tx.conn
        await conn.execute(self._sql.stop_other_schedules, (job_id, environment_id, version_id))
        spec = schedule_of(job) if job.enabled else None
        if spec is None:
            await conn.execute(self._sql.stop_schedule, (version_id,))
            return
        async with conn.cursor(row_factory=class_row(Schedule)) as cur:
            await cur.execute(self._sql.schedule_of_version, (version_id,))
            existing = await cur.fetchone()
        unchanged = (
            existing is not None
            and existing.active
            and (existing.kind, existing.expression) == (spec.kind, spec.expression)
        )
        async with conn.cursor(row_factory=scalar_row) as ids:
            await ids.execute(self._sql.upsert_schedule, (version_id, spec.kind, spec.expression))
            schedule_id: str | None = await ids.fetchone()
        assert schedule_id is not None
        if unchanged:
            async with conn.cursor(row_factory=scalar_row) as pending:
                await pending.execute(self._sql.tick_pending, (tick_key(schedule_id),))
                unchanged = bool(await pending.fetchone())  # else its chain of ticks died
        if not unchanged:
            now = datetime.now(UTC)
            await self._queue_tick(tx, schedule_id, spec.next_tick(now), last=None)

    async def stop_unlisted(self, tx: Transaction, endpoint_id: str, slugs: list[str]) -> None:
        """The endpoint's jobs that its index no longer lists stop firing."""
        await tx.conn.execute(self._sql.stop_unlisted_schedules, (endpoint_id, slugs))

    async def deliver_tick(self, payload: DeliverScheduled, job: RunningJob) -> None:
        """One run for this tick (once, however often the tick is retried), and the next."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=class_row(Schedule)) as cur:
                await cur.execute(self._sql.lock_schedule, (payload.id,))
                schedule = await cur.fetchone()
            if schedule is None or not schedule.active:
                return  # removed or replaced: the chain of ticks ends here
            async with tx.conn.cursor(row_factory=class_row(JobVersion)) as versions:
                await versions.execute(self._sql.version_by_id, (schedule.version_id,))
                version = await versions.fetchone()
            async with tx.conn.cursor(row_factory=class_row(Environment)) as environments:
                await environments.execute(
                    self._sql.environment_by_id, (version.environment_id if version else "",)
                )
                environment = await environments.fetchone()
            if version is None or environment is None:
                return
            tick = payload.payload
            event = await self.runs.store_event(
                tx.conn,
                environment,
                NewEvent(
                    id=f"schedule:{schedule.id}:{tick.ts.isoformat()}",
                    name=SCHEDULED_EVENT,
                    payload=tick.model_dump(mode="json", by_alias=True, exclude_none=True),
                ),
            )
            if event is not None:
                await self.runs.create_run(tx, environment, version, event.id)
            await tx.conn.execute(self._sql.set_last_tick, (tick.ts, schedule.id))
            spec = ScheduleSpec(schedule.kind, schedule.expression)
            now = datetime.now(UTC)
            following = spec.next_tick(tick.ts)
            await self._queue_tick(tx, schedule.id, max(following, now), last=tick.ts)

    async def _queue_tick(
        self, tx: Transaction, schedule_id: str, at: datetime, *, last: datetime | None
    ) -> None:
        await tx.enqueue(
            DeliverScheduled(id=schedule_id, payload=ScheduledPayload(ts=at, last_timestamp=last)),
            job_key=tick_key(schedule_id),
            run_at=at,
        )
