"""Writes job outcomes in batches: whatever finished while the previous write ran goes in the next
one (group commit), so there is no added latency when idle and few writes when busy.

Outcomes are kept until written: a database outage delays them, it never loses them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger("kongflow.worker")

MAX_BATCH = 1000
# A completed job with no result, the common outcome: recognised by identity, never mutated.
COMPLETED: Final[dict[str, Any]] = {"outcome": "completed"}
# Worker id, job id, locked_at, the outcome as JSON, and whether it is a completion with a result.
_Pending = tuple[str, int, str, str, bool]


def encode_outcome(job_id: int, locked_at: str, outcome: dict[str, Any]) -> str:
    """One element of `_settle_jobs`'s outcomes. The common one (COMPLETED) is formatted
    directly, several times faster than through json for every job of a busy worker."""
    if outcome is COMPLETED:
        return f'{{"id":{job_id},"locked_at":"{locked_at}","outcome":"completed"}}'
    return json.dumps({"id": job_id, "locked_at": locked_at, **outcome}, default=str)


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
        self._pending: list[_Pending] = []
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.rejected = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def held(self) -> set[int]:
        """Jobs with an outcome not written yet (being written included): still locked."""
        return {pending[1] for pending in self._pending}

    def submit(self, worker_id: str, job_id: int, locked_at: str, outcome: dict[str, Any]) -> None:
        """Queue an outcome of a job claimed under (`worker_id`, `locked_at`), the fencing
        token. It is encoded now: the batch is then a join of texts."""
        text = encode_outcome(job_id, locked_at, outcome)
        with_result = outcome is not COMPLETED and "result" in outcome
        self._pending.append((worker_id, job_id, locked_at, text, with_result))
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

    async def _write_singly(self, batch: list[_Pending]) -> None:
        for pending in batch:
            worker_id, job_id, locked_at, _, with_result = pending
            try:
                await self._write([pending])
            except psycopg.Error as exc:
                reason = _reason(exc)
                if with_result:
                    # The handler succeeded: the job completes, as one whose result the worker
                    # found unstorable does, only without its result.
                    log.warning(
                        "job %s completed, but the database refused its result (%s): kept"
                        " without a result",
                        job_id,
                        reason,
                        extra={"job_id": job_id, "error": reason},
                    )
                    fallback = COMPLETED
                else:
                    log.error(
                        "the outcome of job %s could not be stored: %s",
                        job_id,
                        reason,
                        extra={"job_id": job_id, "error": reason},
                    )
                    error = {"type": "UnstorableOutcome", "message": f"outcome not stored: {exc}"}
                    fallback = {"outcome": "failed_permanently", "error": error}
                try:
                    text = encode_outcome(job_id, locked_at, fallback)
                    await self._write([(worker_id, job_id, locked_at, text, False)])
                except psycopg.Error:
                    log.exception("job %s left to the heartbeat's or the lease's rescue", job_id)

    async def _write(self, batch: list[_Pending]) -> None:
        by_worker: dict[str, list[_Pending]] = defaultdict(list)
        for pending in batch:
            by_worker[pending[0]].append(pending)
        async with self._pool.connection() as conn:
            for worker_id, outcomes in by_worker.items():
                document = "[" + ",".join(pending[3] for pending in outcomes) + "]"
                cur = await conn.execute(self._sql, (worker_id, document, self._keep_completed))
                row = await cur.fetchone()
                accepted = set(row[0]) if row else set()
                for _, job_id, _, _, _ in outcomes:
                    if job_id not in accepted:
                        self.rejected += 1
                        log.warning(
                            "result of job %s rejected: the job no longer belongs to this "
                            "attempt of worker %s (its lease expired, or it was released)",
                            job_id,
                            worker_id,
                        )


def _reason(error: psycopg.Error) -> str:
    """The database's message on one line: what, and the detail that says why."""
    primary, detail = error.diag.message_primary, error.diag.message_detail
    if primary is None:
        return " ".join(str(error).split())
    return f"{primary}: {detail}" if detail else primary
