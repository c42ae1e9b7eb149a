"""Claims jobs into a worker's free slots, and decides when to look for work.

Claiming is where a worker's throughput and latency are won or lost, and its rules interlock
(slots reserved by claims in flight, a second claim while a backlog lasts, a wake-up arriving
during a claim, backpressure from unwritten results); kept together here they can be read, and
changed, as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from kongflow.engine.completer import Completer
from kongflow.engine.errors import WorkerLost
from kongflow.engine.executor import Fence
from kongflow.engine.models import decode_payload
from kongflow.engine.settings import WorkerSettings
from kongflow.engine.tasks import RunningJob

_CLAIMS_IN_FLIGHT = 2
_CLAIM_SHARE = 3  # a claim asks for up to a third of the slots


class WakeUps:
    """When the producer looks for work: woken by a NOTIFY, the listener's (re)connection, a
    finished claim, or, after a job ends or results are written, by `look_again`'s rules. Made
    first, so the executor and the completer can be handed `look_again` before the producer
    exists."""

    def __init__(self, look_after_each_result: bool) -> None:
        self.event = asyncio.Event()
        self.count = 0  # counts wake-ups, so a claim can tell if one came while it ran
        self.backlog = False  # the last claim came back full
        self.held_back = False  # the producer did not look for work: no free slot, or backpressure
        # Without LISTEN no NOTIFY comes; a flags function may allow a job once another ends.
        self.look_after_each_result = look_after_each_result

    def wake(self) -> None:
        self.count += 1
        self.event.set()

    def look_again(self) -> None:
        """A job finished, or results were written: look for work if there may be some this
        worker did not take. Otherwise a claim would find nothing (new work comes with a NOTIFY,
        a named queue's freed slot too, sent by the settling), and one in flight delays the
        claim a NOTIFY asks for."""
        if self.backlog or self.held_back or self.look_after_each_result:
            self.wake()


def claim_size(
    concurrency: int, free: int, in_flight: int, backlog: bool, results_backlogged: bool
) -> int:
    """How many jobs the next claim asks for, 0 for no claim now: one claim at a time, or up
    to two in flight while claims come back full (`backlog`), each for up to a third of the
    slots and never more than are `free`; none while the completer is far behind."""
    wanted = in_flight == 0 or (backlog and in_flight < _CLAIMS_IN_FLIGHT)
    if free <= 0 or results_backlogged or not wanted:
        return 0
    return min(free, -(-concurrency // _CLAIM_SHARE))


class Producer:
    """Claims jobs of `task_names` for the worker `worker_id` and hands each to `start_job` with
    its claim's fence. `running` is the executor's map of running jobs (its size: the slots taken);
    `landed` holds jobs whose claim has come back but which have not started yet (held all the
    same: the heartbeat reports them)."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        claim_sql: str,
        worker_id: str,
        task_names: Sequence[str],
        settings: WorkerSettings,
        wakeups: WakeUps,
        running: Mapping[int, Any],
        landed: set[int],
        completer: Completer,
        start_job: Callable[[RunningJob, Fence], None],
        on_lost: Callable[[], Awaitable[None]],
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self._pool = pool
        self._claim_sql = claim_sql
        self._worker_id = worker_id
        self._concurrency = settings.concurrency
        self._task_names = list(task_names)
        self._queues = settings.queue_patterns
        self._forbidden_flags = settings.forbidden_flags
        self._poll_interval = settings.poll_interval
        self._wakeups = wakeups
        self._running = running
        self._completer = completer
        self._start_job = start_job
        self._on_lost = on_lost
        self._on_error = on_error
        self.landed = landed
        self.claiming = 0  # slots reserved by claims in flight
        # Counted here, not as len(claims): a finished claim leaves that set only in a later
        # loop turn, and the producer it wakes must already see it gone.
        self._claims_in_flight = 0
        self._claims: set[asyncio.Task[None]] = set()
        self._claim_delay = 0.1  # back-off after a failed claim
        self.stopping = False

    def wake(self) -> None:
        """Look for work now."""
        self._wakeups.wake()

    def stop(self) -> None:
        """Take no more jobs; `run` returns once the claims in flight have landed."""
        self.stopping = True
        self._wakeups.wake()

    async def run(self) -> None:
        """Claims jobs into free slots, whenever woken (a NOTIFY, a freed slot under a backlog,
        the poll)."""
        wakeup = self._wakeups.event
        try:
            while not self.stopping:
                wakeup.clear()
                if self._claim_if_room():
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self._poll_interval)
        finally:
            if self._claims:  # let claims in flight land: stop() waits for the jobs they took
                await asyncio.wait(self._claims)

    def _claim_if_room(self, held: int = 0) -> bool:
        """Start a claim if slots are free and one is wanted: one at a time, or while claims
        come back full (a backlog) up to two in flight, each for up to a third of the slots, so
        the database works on the next batches while this process runs the last one. `held`
        slots are taken by jobs about to start. Returns whether it started one."""
        wakeups = self._wakeups
        free = self._concurrency - len(self._running) - self.claiming - held
        backlogged = self._completer.backlog > 10 * self._concurrency
        size = claim_size(
            self._concurrency, free, self._claims_in_flight, wakeups.backlog, backlogged
        )
        if size and not self.stopping:
            wakeups.held_back = False
            self.claiming += size
            self._claims_in_flight += 1
            claim = asyncio.create_task(self._claim_into_slots(size))
            self._claims.add(claim)
            claim.add_done_callback(self._claims.discard)
            return True
        if free <= 0 or backlogged:
            wakeups.held_back = True  # look once a slot or the results backlog frees up
        return False

    async def _claim_into_slots(self, size: int) -> None:
        """One claim. A full batch sends the next claim before its own jobs start (its slots
        held meanwhile), so the database works on it while they run. The producer looks again
        if the claim failed, or if anything woke it meanwhile (a NOTIFY that arrived while this
        claim was in flight may be for a job it did not see)."""
        wakeups = self._wakeups
        wakes = wakeups.count
        jobs: list[RunningJob] = []
        failed = True
        try:
            jobs = await self._claim(size)
            failed = False
            self._claim_delay = 0.1
        except WorkerLost:
            await self._on_lost()
        except Exception as exc:  # the database, or a forbidden_flags callable
            self._on_error(exc, "claiming jobs (retrying)")
            await asyncio.sleep(self._claim_delay)  # holding the slots: no claim meanwhile
            self._claim_delay = min(self._claim_delay * 2, 5.0)
        finally:
            self.claiming -= size
            self._claims_in_flight -= 1
        wakeups.backlog = len(jobs) == size  # full: there may be more, claim again at once
        if jobs:
            if wakeups.backlog:
                self._claim_if_room(held=len(jobs))
            # One claim is one statement: its jobs share locked_by and locked_at (now()).
            first = jobs[0]
            assert first.locked_at is not None
            fence = (first.locked_by or self._worker_id, first.locked_at.isoformat())
            start_job, landed = self._start_job, self.landed
            for job in jobs:
                start_job(job, fence)
                landed.discard(job.id)
        if failed or wakeups.backlog or wakeups.count != wakes:
            wakeups.wake()

    async def _claim(self, limit: int) -> list[RunningJob]:
        params = (
            self._worker_id,
            limit,
            self._task_names,
            self._queues,
            await self.forbidden(),
        )
        landed: list[int] = []
        try:
            async with (
                self._pool.connection() as conn,
                conn.cursor(row_factory=RunningJob.row_factory, binary=True) as cur,
            ):
                set_json_loads(decode_payload, cur)
                await cur.execute(self._claim_sql, params)
                jobs: list[RunningJob] = await cur.fetchall()
                # Held from now on, before anything else runs (the heartbeat tells the
                # database which jobs this worker holds).
                landed = [job.id for job in jobs]
                self.landed.update(landed)
            return jobs
        except BaseException as exc:
            # They will never start here: the heartbeat lets the database release them.
            self.landed.difference_update(landed)
            if isinstance(exc, psycopg.Error) and exc.sqlstate == "KF001":
                raise WorkerLost(str(exc)) from exc
            raise

    async def forbidden(self) -> list[str] | None:
        """The flags this worker skips now."""
        source = self._forbidden_flags
        flags = source() if callable(source) else source
        if inspect.isawaitable(flags):
            flags = await flags
        return list(flags) if flags else None
