"""A worker's lease: its registration, the heartbeat that keeps it, and the agreement with the
database about which jobs the worker holds.

Crash safety rests on this (a silent worker's jobs are rescued, a live worker's are not, and a
job claimed for a worker that never received it is released), so it is kept apart from the
running of jobs, whose speed it must not cost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from kongflow.engine.completer import Completer
from kongflow.engine.maintenance import LEASE_NAME
from kongflow.engine.settings import WorkerSettings
from kongflow.engine.sql import EngineSQL

log = logging.getLogger("kongflow.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """Registers the worker `worker_id` and keeps its lease. `running` and `landed` are the jobs
    it runs and those about to start; `cancel` is told of cancel requests the heartbeat finds."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        sql: EngineSQL,
        worker_id: str,
        task_names: Sequence[str],
        settings: WorkerSettings,
        running: Iterable[int],
        landed: set[int],
        completer: Completer,
        cancel: Callable[[int, str], None],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self._pool = pool
        self._sql = sql
        self._worker_id = worker_id
        self._task_names = list(task_names)
        self._concurrency = settings.concurrency
        self._lease = settings.lease
        self._heartbeat_interval = settings.heartbeat_seconds
        self._queues = settings.queue_patterns
        self._running = running
        self._landed = landed
        self._completer = completer
        self._cancel = cancel
        self._on_error = on_error
        self.stopping = False

    async def register(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                self._sql.register_worker,
                (
                    self._worker_id,
                    socket.gethostname(),
                    os.getpid(),
                    self._task_names,
                    self._concurrency,
                    timedelta(seconds=self._lease),
                    self._queues,
                ),
            )

    async def register_again(self) -> None:
        """This worker's registration is gone: its lease expired (it was presumed dead) or it
        was force-unlocked, and the jobs it held then were released; or the row was deleted
        and its jobs are still locked under its id. It registers again under the same id, so
        it keeps the jobs still locked under it, while results of the released ones are
        rejected all the same (a result must match its claim's lock time too)."""
        log.warning("worker %s lost its registration; registering again", self._worker_id)
        while not self.stopping:
            try:
                await self.register()
                return
            except Exception as exc:
                self._on_error(exc, "registering again (retrying)")
                await asyncio.sleep(1.0)

    async def release(self) -> None:
        """Give up the maintenance lease, if held, and the registration: a clean exit."""
        async with self._pool.connection() as conn:
            await conn.execute(self._sql.release_lease, (LEASE_NAME, self._worker_id))
            await conn.execute(self._sql.deregister_worker, (self._worker_id,))

    def held_jobs(self) -> list[int]:
        """The jobs this worker is running, about to start, or still has results of."""
        held = set(self._running) | self._landed
        held |= self._completer.held
        return list(held)

    async def run(self) -> None:
        """Keeps the lease; tells the database which jobs this worker holds, so that a job
        claimed for it whose reply never arrived is released (once older than the lease: a
        claim's reply takes far less); picks up cancel requests a NOTIFY may have missed."""
        grace = timedelta(seconds=self._lease)
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        self._sql.heartbeat, (self._worker_id, self.held_jobs(), grace)
                    )
                    row = await cur.fetchone()
                assert row is not None
                registered, released, cancel_requested = row
                if not registered:
                    await self.register_again()
                    continue
                if released:
                    log.warning(
                        "worker %s: released %d job(s) claimed for it that it never received"
                        " (the claim's reply was lost): %s",
                        self._worker_id,
                        len(released),
                        released,
                    )
                for job_id in cancel_requested:
                    self._cancel(job_id, "cancelled")
            except Exception as exc:
                self._on_error(exc, "heartbeat (retrying)")
