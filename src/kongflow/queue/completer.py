"""Writes job outcomes in batches: whatever finished while the previous write ran goes in the next
one (group commit), so there is no added latency when idle and few writes when busy.

Outcomes are kept until written: a database outage delays them, it never loses them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger("kongflow.worker")

MAX_BATCH = 1000


class Completer:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        settle_sql: str,
        keep_completed: bool,
        on_written: Callable[[], None],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self._pool = pool
        self._sql = settle_sql
        self._keep_completed = keep_completed
        self._on_written = on_written
        self._on_error = on_error
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.rejected = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def submit(self, worker_id: str, outcome: dict[str, Any]) -> None:
        """Queue an outcome of a job claimed under `worker_id` (the fencing token)."""
        self._pending.append((worker_id, outcome))
        self._idle.clear()
        self._has_work.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def run(self) -> None:
        delay = 0.05
        while True:
            await self._has_work.wait()
            batch = self._pending[:MAX_BATCH]
            try:
                await self._write(batch)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                self._on_error(exc, "writing job results (will retry)")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except psycopg.Error as exc:
                # Not the connection: something in the batch the database refuses. Write the
                # results one by one so one bad result cannot hold back the others.
                self._on_error(exc, "writing job results (writing them one by one)")
                await self._write_singly(batch)
            delay = 0.05
            del self._pending[: len(batch)]
            if not self._pending:
                self._has_work.clear()
                self._idle.set()
            self._on_written()

    async def _write_singly(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for worker_id, outcome in batch:
            try:
                await self._write([(worker_id, outcome)])
            except psycopg.Error as exc:
                log.error("result of job %s could not be stored: %s", outcome["id"], exc)
                fallback = {
                    "id": outcome["id"],
                    "locked_at": outcome["locked_at"],
                    "outcome": "failed_permanently",
                    "error": {"type": "UnstorableResult", "message": f"result not stored: {exc}"},
                }
                try:
                    await self._write([(worker_id, fallback)])
                except psycopg.Error:
                    log.exception("job %s left to the lease rescue", outcome["id"])

    async def _write(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for worker_id, outcome in batch:
            by_worker[worker_id].append(outcome)
        async with self._pool.connection() as conn:
            for worker_id, outcomes in by_worker.items():
                cur = await conn.execute(
                    self._sql,
                    (worker_id, json.dumps(outcomes, default=str), self._keep_completed),
                )
                row = await cur.fetchone()
                accepted = set(row[0]) if row else set()
                for outcome in outcomes:
                    if outcome["id"] not in accepted:
                        self.rejected += 1
                        log.warning(
                            "result of job %s rejected: the job no longer belongs to this "
                            "attempt of worker %s (its lease expired, or it was released)",
                            outcome["id"],
                            worker_id,
                        )
