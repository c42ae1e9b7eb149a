"""Maintenance run by one elected leader among the workers: rescue of jobs held by lost workers,
retention cleanup, and garbage collection of empty queues. Leadership is a lease in the database;
when the leader dies its lease runs out and another worker takes over.

Every worker (leader or not) also reports queue figures to its reporters (metrics, callbacks)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from kongflow.engine.hooks import HookSet

log = logging.getLogger("kongflow.maintenance")

QueueReporter = Callable[[list[dict[str, Any]]], Awaitable[None] | None]
LEASE_NAME = "maintenance"


async def cleanup_jobs(
    pool: AsyncConnectionPool[Any],
    sql: Any,
    options: MaintenanceOptions,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Delete what is past retention, a batch per transaction, then collect empty queues.
    Returns (finished, failed) deleted; `on_progress` sees the running totals."""
    finished = failed = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(
                sql.cleanup_jobs,
                (options.completed_retention, options.failed_retention, options.cleanup_batch),
            )
            row = await cur.fetchone()
        assert row is not None
        finished += row[0]
        failed += row[1]
        if on_progress is not None:
            on_progress(finished, failed)
        if max(row[0], row[1]) < options.cleanup_batch:
            break
    async with pool.connection() as conn:
        await conn.execute(sql.gc_job_queues)
    if finished or failed:
        log.info("cleanup: deleted %d finished and %d failed job(s)", finished, failed)
    return finished, failed


@dataclass(frozen=True)
class MaintenanceOptions:
    """Retention of completed and cancelled jobs (0 = not kept at all) and of permanently failed
    ones; how often cleanup runs and how many rows one pass deletes (ZodWorker's cleanup ttl,
    maxCount and schedule); how often queues are reported; how often the leader looks for lost
    workers (default: every 5 s, or half the lease if shorter). A lost worker's jobs run again
    within its lease plus the rescue interval plus the time a slot takes to free up."""

    completed_retention: timedelta = timedelta(hours=1)
    failed_retention: timedelta = timedelta(days=7)
    cleanup_interval: float = 60.0
    cleanup_batch: int = 1000
    report_interval: float = 15.0
    rescue_interval: float | None = None

    def __post_init__(self) -> None:
        if self.rescue_interval is not None and self.rescue_interval <= 0:
            raise ValueError(f"rescue_interval must be positive, got {self.rescue_interval}")

    def rescue_every(self, lease: float) -> float:
        """Seconds between two rescue passes of a leader holding this lease."""
        if self.rescue_interval is not None:
            return self.rescue_interval
        return min(lease / 2, 5.0)


class Maintenance:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        sql: Any,
        worker_id: Callable[[], str],
        lease: float,
        options: MaintenanceOptions,
        hooks: HookSet,
        reporters: Sequence[QueueReporter] = (),
        on_rescued: Callable[[list[tuple[str, str | None]]], None] | None = None,
        *,
        lead: bool = True,
    ) -> None:
        self._pool = pool
        self._sql = sql
        self._worker_id = worker_id
        self._lease = lease
        self.options = options
        self._hooks = hooks
        self._reporters = list(reporters)
        self._on_rescued = on_rescued
        self._lead = lead
        self.is_leader = False
        self._last: dict[str, float] = {}

    @property
    def step(self) -> float:
        """Seconds between turns: the leadership lease is renewed at least three times per
        lease, and the rescue interval is a whole number of turns (a chore due between two
        turns would otherwise wait for the next one, up to a turn late every time)."""
        rescue = self.options.rescue_every(self._lease)
        return rescue / math.ceil(rescue / min(self._lease / 3, 5.0))

    async def run(self) -> None:
        """Runs until cancelled; errors are reported and retried on the next turn."""
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                self._hooks.emit("error", exc, "maintenance (retrying)")
                log.warning("maintenance: %s", exc)
            await asyncio.sleep(self.step)

    async def run_once(self) -> None:
        self.is_leader = self._lead and await self._acquire()
        if self.is_leader:
            if self._due("rescue", self.options.rescue_every(self._lease)):
                await self.rescue()
            if self._due("cleanup", self.options.cleanup_interval):
                await self.cleanup()
        if self._reporters and self._due("report", self.options.report_interval):
            await self.report()

    async def _acquire(self) -> bool:
        row = await self._fetchone(
            self._sql.acquire_lease, (LEASE_NAME, self._worker_id(), timedelta(seconds=self._lease))
        )
        leader = bool(row and row[0])
        if leader and not self.is_leader:
            log.info("worker %s is now the maintenance leader", self._worker_id())
        return leader

    def _due(self, chore: str, interval: float) -> bool:
        now = time.monotonic()
        # Half a turn early counts as on time: turns come a little later than their step
        # each time, never earlier, so a chore is neither skipped a turn nor run twice in one.
        if now - self._last.get(chore, float("-inf")) < interval - self.step / 2:
            return False
        self._last[chore] = now
        return True

    async def rescue(self) -> list[int]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(self._sql.rescue_stale_jobs)
            row = await cur.fetchone()
            ids = list(row[0]) if row and row[0] else []
            if ids:
                cur = await conn.execute(
                    "select id, task_identifier, queue_name, attempts, max_attempts, last_error,"
                    f" state from ({self._sql.get_job_any}) j order by id",
                    (ids,),
                )
                rows = await cur.fetchall()
                rescued = [(r[1], r[2]) for r in rows]
                log.warning("released %d job(s) of lost workers: %s", len(ids), ids)
                for job_id, task, queue, attempts, max_attempts, error, state in rows:
                    if state == "cancelled":  # it had been asked to stop: that is what it did
                        continue
                    # A lost attempt is a failed attempt: logged as the worker logs those.
                    log.warning(
                        "job %s (task %s, queue %s) attempt %d/%d failed: %s",
                        job_id,
                        task,
                        queue or "-",
                        attempts,
                        max_attempts,
                        error,
                        extra={
                            "job_id": job_id,
                            "task": task,
                            "queue": queue,
                            "attempt": attempts,
                            "max_attempts": max_attempts,
                            "error": error,
                        },
                    )
                self._hooks.emit("jobs_rescued", ids)
                if self._on_rescued:
                    self._on_rescued(rescued)
        return ids

    async def cleanup(self) -> tuple[int, int]:
        return await cleanup_jobs(self._pool, self._sql, self.options)

    async def report(self) -> None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._sql.queue_stats)
            stats = await cur.fetchall()
        for reporter in self._reporters:
            result = reporter(stats)
            if inspect.isawaitable(result):
                await result

    async def _fetchone(self, query: str, params: Any) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()
