"""The worker: claims jobs, runs their handlers, records what happened, and keeps its lease.

Its parts run as asyncio tasks: the producer claims jobs into free slots; each job runs in its own
task (plain handlers in a thread pool); the completer writes outcomes in batches; the heartbeat
keeps the lease; the rescuer releases jobs of lost workers; the listener wakes the producer and
delivers cancellations.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kongflow import embedded
from kongflow.queue.completer import COMPLETED, Completer
from kongflow.queue.cron import CronItem, CronScheduler, as_cron_items
from kongflow.queue.errors import JobTimeout, PermanentFailure, Snooze, WorkerLost
from kongflow.queue.hooks import HookSet, WorkerHooks
from kongflow.queue.listener import listen
from kongflow.queue.maintenance import LEASE_NAME, Maintenance, MaintenanceOptions, QueueReporter
from kongflow.queue.migrate import channels, migrate
from kongflow.queue.models import decode_payload, unstorable_reason
from kongflow.queue.sql import engine_sql
from kongflow.queue.tasks import Handler, RunningJob, Task, as_tasks
from kongflow.queue.tracing import job_span, record_failure, tracing_enabled
from kongflow.settings import DEFAULT_SCHEMA, validate_schema

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    from kongflow.queue.metrics import Metrics

log = logging.getLogger("kongflow.worker")

ForbiddenFlags = (
    Sequence[str]
    | Callable[[], Sequence[str] | None]
    | Callable[[], Awaitable[Sequence[str] | None]]
)
_DB_ERRORS = (psycopg.OperationalError, PoolTimeout)
DEFAULT_MAINTENANCE = MaintenanceOptions()
_MAX_TRACEBACK = 8000
_NO_SPAN = nullcontext()
_CLAIMS_IN_FLIGHT = 2
_CLAIM_SHARE = 3  # a claim asks for up to a third of the slots
_Fence = tuple[str, str]  # a claim's locked_by and locked_at: results are accepted only under it


def queue_patterns(queues: Sequence[str] | None) -> list[str] | None:
    """Queue names or `*` patterns as LIKE patterns."""
    if queues is None:
        return None
    escaped = (q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for q in queues)
    return [q.replace("*", "%") for q in escaped]


class Worker:
    """Runs jobs of the given tasks: `async with Worker(url, tasks={...}): ...` or `await
    worker.run()`.

    - `concurrency`: jobs run at once by this worker.
    - `queues`: serve only these named queues (names or `runs:*` patterns); default: every queue
      and jobs with no queue.
    - `queue_limits`: global limits for queues by name or pattern, stored in the database for
      every worker (a named queue without one runs one job at a time).
    - `forbidden_flags`: skip jobs with any of these flags; a list, or a function (sync or async)
      asked before each claim.
    - `poll_only`: no LISTEN (for transaction-mode poolers): look for work every `poll_interval`.
    - `lease`: a worker silent for longer is presumed dead and its jobs are released (ready at
      once, the lost attempt counted); a job locked for longer under this worker that it does
      not hold (a claim whose reply was lost) is released by its own heartbeat.
    - `crontab`: recurring jobs (graphile-worker's crontab text, or CronItems).
    - `maintenance`: retention and cleanup settings for when this worker is the elected leader
      (None: never lead). `queue_reporters` receive per-queue figures periodically.
    - `metrics`: Prometheus metrics fed by this worker.
    """

    # Seconds between two looks for ready jobs of tasks this worker has no handler for.
    _unknown_tasks_interval = 60.0

    def __init__(
        self,
        database: str | AsyncConnectionPool[Any] | None = None,
        tasks: Mapping[str, Handler | Task] | None = None,
        *,
        concurrency: int = 10,
        poll_interval: float = 1.0,
        queues: Sequence[str] | None = None,
        queue_limits: Mapping[str, int] | None = None,
        forbidden_flags: ForbiddenFlags | None = None,
        schema: str = DEFAULT_SCHEMA,
        poll_only: bool = False,
        lease: float = 30.0,
        heartbeat_interval: float | None = None,
        hooks: Sequence[WorkerHooks] = (),
        crontab: str | Iterable[CronItem] | None = None,
        maintenance: MaintenanceOptions | None = DEFAULT_MAINTENANCE,
        queue_reporters: Sequence[QueueReporter] = (),
        metrics: Metrics | None = None,
        migrate: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if lease <= 0 or poll_interval <= 0:
            raise ValueError("lease and poll_interval must be positive")
        for name, limit in (queue_limits or {}).items():
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"queue_limits[{name!r}] must be an integer >= 1, got {limit!r}")
        self.tasks = as_tasks(tasks or {})
        self.schema = validate_schema(schema)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.poll_only = poll_only
        self.lease = lease
        self.heartbeat_interval = heartbeat_interval or min(lease / 3, 10.0)
        if self.heartbeat_interval > lease / 2:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be at most half the lease"
                f" ({lease}s), or the worker would be presumed dead between heartbeats"
            )
        self._queues = queue_patterns(queues)
        self._queue_limits = dict(queue_limits or {})
        self._forbidden_flags = forbidden_flags
        self._database = database
        self._pool: AsyncConnectionPool[Any] | None = (
            database if isinstance(database, AsyncConnectionPool) else None
        )
        self._owns_pool = self._pool is None
        self._migrate = migrate
        self._sql = engine_sql(self.schema)
        self.cron_items = as_cron_items(crontab)
        self.metrics = metrics
        self._maintenance_options = maintenance
        reporters = list(queue_reporters)
        if metrics is not None:
            hooks = [*hooks, metrics]
            reporters.append(metrics.report_queues)
        self._queue_reporters = reporters
        self._hooks = HookSet(hooks)
        self._task_names = sorted(self.tasks)
        self.id = self._new_id()

        self._running: dict[int, tuple[RunningJob, asyncio.Task[None]]] = {}
        # Jobs whose claim has come back but which have not started yet: held all the same.
        self._landed: set[int] = set()
        self._unknown_tasks: set[str] = set()  # warned about once each
        self._cancel_reasons: dict[int, str] = {}
        self._early_cancels: set[int] = set()
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="kongflow-job")
        self._wakeup = asyncio.Event()
        self._claiming = 0  # slots reserved by claims in flight
        # Counted here, not as len(claims): a finished claim leaves that set only in a later
        # loop turn, and the producer it wakes must already see it gone.
        self._claims_in_flight = 0
        self._claims: set[asyncio.Task[None]] = set()
        self._wakes = 0  # counts wake-ups, so a claim can tell if one came while it ran
        self._backlog = False  # the last claim came back full
        self._held_back = False  # the producer did not look for work: no free slot, or backpressure
        # Without LISTEN no NOTIFY comes; a flags function may allow a job once another ends.
        self._look_after_each_result = poll_only or callable(forbidden_flags)
        self._claim_delay = 0.1  # back-off after a failed claim
        self._stopping = False
        self._started = False
        self._stopped = asyncio.Event()
        self._services: list[asyncio.Task[None]] = []
        self._completer: Completer | None = None
        self.maintenance: Maintenance | None = None
        self.cron: CronScheduler | None = None
        self.failure: BaseException | None = None  # why the worker stopped on its own, if it did
        self._stopper: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("this worker was already started")
        self._started = True
        if self._pool is None:
            assert not isinstance(self._database, AsyncConnectionPool)
            url = await asyncio.to_thread(embedded.resolve_database_url, self._database)
            self._pool = AsyncConnectionPool(
                url,
                min_size=2,
                max_size=4,
                kwargs={"autocommit": True},
                configure=_read_times_in_utc,
                timeout=10,
                open=False,
            )
            await self._pool.open(wait=True)
        if self._migrate:
            async with self._pool.connection() as conn:
                await migrate(conn, self.schema)
        if self._queue_limits:
            await self._execute(self._sql.set_queue_limits, (json.dumps(self._queue_limits),))
        await self._register()
        keep_completed = (
            self._maintenance_options is None
            or self._maintenance_options.completed_retention > timedelta(0)
        )
        self._completer = Completer(
            self._pool, self._sql.settle_jobs, keep_completed, self._look_again, self._report_error
        )
        if not self.poll_only:
            # Listen before claiming, so no cancellation or wake-up is missed after start().
            names = channels(self.schema)
            connected = asyncio.Event()

            def on_connected() -> None:
                connected.set()
                self._wake()

            self._spawn(
                listen(
                    str(self._pool.conninfo),
                    _connect_kwargs(self._pool),
                    [names["jobs"], names["cancel"]],
                    self._on_notify,
                    on_connected,
                    self._report_error,
                ),
                "listener",
            )
            await asyncio.wait_for(connected.wait(), 30)
        self._spawn(self._completer.run(), "completer")
        self._spawn(self._produce(), "producer")
        self._spawn(self._heartbeat(), "heartbeat")
        self._spawn(self._watch_for_unknown_tasks(), "unknown-tasks")
        self.maintenance = Maintenance(
            self._pool,
            self._sql,
            lambda: self.id,
            self.lease,
            self._maintenance_options or DEFAULT_MAINTENANCE,
            self._hooks,
            self._queue_reporters,
            self.metrics.record_rescued if self.metrics else None,
            lead=self._maintenance_options is not None,
        )
        self._spawn(self.maintenance.run(), "maintenance")
        if self.cron_items:
            unhandled = sorted({i.task for i in self.cron_items} - set(self.tasks))
            if unhandled:
                log.warning("crontab tasks with no handler in this worker: %s", unhandled)
            self.cron = CronScheduler(self._pool, self._sql, self.cron_items)
            await self.cron.start()
            self._spawn(self._run_cron(self.cron), "cron")
        log.info(
            "worker %s started: %d task(s), concurrency %d",
            self.id,
            len(self.tasks),
            self.concurrency,
        )

    async def run(self) -> None:
        """Start, and return once stopped (by `stop()`, e.g. from a signal handler)."""
        await self.start()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        """Return once the worker has stopped (see `failure` for whether it chose to)."""
        await self._stopped.wait()

    async def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: take no new jobs, let running ones finish for up to `timeout`
        seconds, then cancel them and give them back to the queue with their attempt."""
        if not self._started:
            return
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._wake()
        # Let a claim in flight land first, so every job it took is waited for below.
        producer = next((t for t in self._services if t.get_name() == "kongflow-producer"), None)
        if producer is not None:
            await asyncio.wait([producer], timeout=max(timeout, 5))
        jobs = [task for _, task in self._running.values()]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=timeout)
            for task in late:
                job_id = next(j.id for j, t in self._running.values() if t is task)
                self._cancel(job_id, "shutdown")
            if late:
                await asyncio.wait(late, timeout=5)
        flushed = await self._flush(timeout=max(timeout, 5))
        await _cancel_all(self._services)
        if flushed:
            try:
                await self._execute(self._sql.release_lease, (LEASE_NAME, self.id))
                await self._execute(self._sql.deregister_worker, (self.id,))
            except _DB_ERRORS as exc:
                self._report_error(exc, "deregistering (the lease will expire instead)")
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
        self._stopped.set()
        log.info("worker %s stopped", self.id)

    async def drain(self) -> None:
        """Return once no job this worker could take is ready and none is running here."""
        while True:
            idle = not self._running and not self._claiming
            if idle and self._completer is not None and not self._completer.backlog:
                row = await self._fetchone(
                    self._sql.has_ready_jobs,
                    {
                        "tasks": self._task_names,
                        "forbidden": await self._forbidden(),
                        "queues": self._queues,
                    },
                )
                if row is not None and not row[0] and not self._running:
                    return
            self._wake()
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running_jobs(self) -> list[RunningJob]:
        return [job for job, _ in self._running.values()]

    @property
    def rejected_results(self) -> int:
        """Results dropped because this worker had lost the job (fencing)."""
        return self._completer.rejected if self._completer else 0

    # -- producer ----------------------------------------------------------------------------

    async def _produce(self) -> None:
        """Claims jobs into free slots, whenever woken (a NOTIFY, a freed slot under a backlog,
        the poll)."""
        try:
            while not self._stopping:
                self._wakeup.clear()
                if self._claim_if_room():
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
        finally:
            if self._claims:  # let claims in flight land: stop() waits for the jobs they took
                await asyncio.wait(self._claims)

    def _claim_if_room(self, held: int = 0) -> bool:
        """Start a claim if slots are free and one is wanted: one at a time, or while claims
        come back full (a backlog) up to two in flight, each for up to a third of the slots, so
        the database works on the next batches while this process runs the last one. `held`
        slots are taken by jobs about to start. Returns whether it started one."""
        free = self.concurrency - len(self._running) - self._claiming - held
        backlogged = self._completer is not None and self._completer.backlog > 10 * self.concurrency
        in_flight = self._claims_in_flight
        wanted = in_flight == 0 or (self._backlog and in_flight < _CLAIMS_IN_FLIGHT)
        if free > 0 and wanted and not backlogged and not self._stopping:
            self._held_back = False
            size = min(free, -(-self.concurrency // _CLAIM_SHARE))
            self._claiming += size
            self._claims_in_flight += 1
            claim = asyncio.create_task(self._claim_into_slots(size))
            self._claims.add(claim)
            claim.add_done_callback(self._claims.discard)
            return True
        if free <= 0 or backlogged:
            self._held_back = True  # look once a slot or the results backlog frees up
        return False

    async def _claim_into_slots(self, size: int) -> None:
        """One claim. A full batch sends the next claim before its own jobs start (its slots
        held meanwhile), so the database works on it while they run. The producer looks again
        if the claim failed, or if anything woke it meanwhile (a NOTIFY that arrived while this
        claim was in flight may be for a job it did not see)."""
        wakes = self._wakes
        jobs: list[RunningJob] = []
        failed = True
        try:
            jobs = await self._claim(size)
            failed = False
            self._claim_delay = 0.1
        except WorkerLost:
            await self._register_again()
        except Exception as exc:  # the database, or a forbidden_flags callable
            self._report_error(exc, "claiming jobs (retrying)")
            await asyncio.sleep(self._claim_delay)  # holding the slots: no claim meanwhile
            self._claim_delay = min(self._claim_delay * 2, 5.0)
        finally:
            self._claiming -= size
            self._claims_in_flight -= 1
        self._backlog = len(jobs) == size  # full: there may be more, claim again at once
        if jobs:
            if self._backlog:
                self._claim_if_room(held=len(jobs))
            # One claim is one statement: its jobs share locked_by and locked_at (now()).
            first = jobs[0]
            assert first.locked_at is not None
            fence = (first.locked_by or self.id, first.locked_at.isoformat())
            for job in jobs:
                self._start_job(job, fence)
        if failed or self._backlog or self._wakes != wakes:
            self._wake()

    async def _claim(self, limit: int) -> list[RunningJob]:
        assert self._pool is not None
        params = (self.id, limit, self._task_names, self._queues, await self._forbidden())
        landed: list[int] = []
        try:
            async with (
                self._pool.connection() as conn,
                conn.cursor(row_factory=RunningJob.row_factory, binary=True) as cur,
            ):
                set_json_loads(decode_payload, cur)
                await cur.execute(self._sql.claim_jobs, params)
                jobs: list[RunningJob] = await cur.fetchall()
                # Held from now on, before anything else runs (the heartbeat tells the
                # database which jobs this worker holds).
                landed = [job.id for job in jobs]
                self._landed.update(landed)
            return jobs
        except BaseException as exc:
            # They will never start here: the heartbeat lets the database release them.
            self._landed.difference_update(landed)
            if isinstance(exc, psycopg.Error) and exc.sqlstate == "KF001":
                raise WorkerLost(str(exc)) from exc
            raise

    async def _forbidden(self) -> list[str] | None:
        source = self._forbidden_flags
        flags = source() if callable(source) else source
        if inspect.isawaitable(flags):
            flags = await flags
        return list(flags) if flags else None

    def _wake(self) -> None:
        self._wakes += 1
        self._wakeup.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel.endswith(":cancel"):
            if payload.isdigit():
                self._cancel(int(payload), "cancelled")
        else:
            self._wake()

    # -- running a job -----------------------------------------------------------------------

    def _start_job(self, job: RunningJob, fence: _Fence) -> None:
        task = asyncio.create_task(self._run_job(job, fence))
        self._running[job.id] = (job, task)
        self._landed.discard(job.id)
        if job.cancel_requested_at is not None or job.id in self._early_cancels:
            self._early_cancels.discard(job.id)
            self._cancel(job.id, "cancelled")

    def _cancel(self, job_id: int, reason: str) -> None:
        entry = self._running.get(job_id)
        if entry is None:
            # The cancel may beat the claim's answer here: remember it for a while.
            if reason == "cancelled":
                self._early_cancels.add(job_id)
                if len(self._early_cancels) > 1000:
                    self._early_cancels.pop()
            return
        job, task = entry
        self._cancel_reasons.setdefault(job_id, reason)
        job.cancelled.set()
        task.cancel()

    async def _run_job(self, job: RunningJob, fence: _Fence) -> None:
        self._hooks.emit("job_started", job)
        started = time.monotonic()
        task = self.tasks.get(job.task_identifier)
        try:
            with job_span(job) if tracing_enabled() else _NO_SPAN as span:
                try:
                    if task is None:  # cannot happen: claims only take this worker's tasks
                        raise PermanentFailure(f"no handler for task {job.task_identifier!r}")
                    result = await self._call(task, job)
                except Exception as error:
                    record_failure(span, error)
                    raise
        except asyncio.CancelledError:
            reason = self._cancel_reasons.pop(job.id, None)
            if reason is None:
                raise  # not ours: the event loop is going away
            if reason == "cancelled":
                self._settle(fence, job, {"outcome": "cancelled"})
                self._hooks.emit("job_cancelled", job)
            else:
                self._settle(fence, job, {"outcome": "returned"})
        except Snooze as snooze:
            run_at = datetime.now(UTC) + timedelta(seconds=snooze.delay)
            self._settle(fence, job, {"outcome": "snoozed", "run_at": run_at.isoformat()})
            self._hooks.emit("job_snoozed", job, run_at)
        except Exception as error:
            self._record_failure(fence, job, task, error)
        else:
            stored = result
            if result is not None and (reason := unstorable_reason(result)) is not None:
                stored = None
                _log_job(
                    logging.WARNING,
                    job,
                    "completed, but its result cannot be stored (%s): kept without a result",
                    reason,
                    error=reason,
                )
            self._settle(
                fence,
                job,
                COMPLETED if stored is None else {"outcome": "completed", "result": stored},
            )
            self._hooks.emit("job_completed", job, time.monotonic() - started)
        finally:
            self._running.pop(job.id, None)
            self._cancel_reasons.pop(job.id, None)
            self._look_again()

    async def _call(self, task: Task, job: RunningJob) -> Any:
        if task.is_async:
            if task.timeout is None:  # the common case, one frame fewer per job
                return await task.handler(job.payload, job)
            return await self._with_timeout(task, job, task.handler(job.payload, job))
        # A thread cannot be interrupted: on timeout or cancel it is told (job.cancelled) and
        # awaited, so its slot stays taken and the job is not released while it still runs.
        loop = asyncio.get_running_loop()
        thread = loop.run_in_executor(self._threads, task.handler, job.payload, job)
        try:
            return await self._with_timeout(task, job, asyncio.shield(thread))
        except BaseException:
            job.cancelled.set()
            await asyncio.wait([thread])
            raise

    @staticmethod
    async def _with_timeout(task: Task, job: RunningJob, call: Awaitable[Any]) -> Any:
        if task.timeout is None:
            return await call
        try:
            async with asyncio.timeout(task.timeout):
                return await call
        except TimeoutError:
            job.cancelled.set()
            raise JobTimeout(f"job timed out after {task.timeout}s") from None

    def _record_failure(
        self, fence: _Fence, job: RunningJob, task: Task | None, error: BaseException
    ) -> None:
        permanent = isinstance(error, PermanentFailure) or job.attempts >= job.max_attempts
        details = {
            "type": type(error).__name__,
            "message": _storable_text(f"{type(error).__name__}: {error}"),
            "traceback": _storable_text(
                "".join(traceback.format_exception(error))[-_MAX_TRACEBACK:]
            ),
        }
        if permanent or task is None:
            _log_job(
                logging.WARNING,
                job,
                "attempt %d/%d failed, no retry: %s",
                job.attempts,
                job.max_attempts,
                details["message"],
                error=details["message"],
            )
            self._settle(fence, job, {"outcome": "failed_permanently", "error": details})
            self._hooks.emit("job_failed", job, error)
            return
        retry_at = datetime.now(UTC) + timedelta(seconds=task.retry_delay(job.attempts))
        _log_job(
            logging.WARNING,
            job,
            "attempt %d/%d failed, retry at %s: %s",
            job.attempts,
            job.max_attempts,
            retry_at.isoformat(timespec="seconds"),
            details["message"],
            error=details["message"],
            retry_at=retry_at.isoformat(),
        )
        self._settle(
            fence, job, {"outcome": "failed", "run_at": retry_at.isoformat(), "error": details}
        )
        self._hooks.emit("job_retried", job, error, retry_at)

    def _settle(self, fence: _Fence, job: RunningJob, outcome: dict[str, Any]) -> None:
        assert self._completer is not None
        self._completer.submit(fence[0], job.id, fence[1], outcome)

    def _look_again(self) -> None:
        """A job finished, or results were written: look for work if there may be some this
        worker did not take. Otherwise a claim would find nothing (new work comes with a NOTIFY,
        a named queue's freed slot too, sent by the settling), and one in flight delays the
        claim a NOTIFY asks for."""
        if self._backlog or self._held_back or self._look_after_each_result:
            self._wake()

    async def _flush(self, timeout: float) -> bool:
        if self._completer is None:
            return True
        try:
            await asyncio.wait_for(self._completer.wait_idle(), timeout)
        except TimeoutError:
            log.warning(
                "worker %s: %d job result(s) could not be written; their jobs will be "
                "released when the lease expires",
                self.id,
                self._completer.backlog,
            )
            return False
        return True

    # -- lease -------------------------------------------------------------------------------

    @staticmethod
    def _new_id() -> str:
        return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    async def _register(self) -> None:
        await self._execute(
            self._sql.register_worker,
            (
                self.id,
                socket.gethostname(),
                os.getpid(),
                self._task_names,
                self.concurrency,
                timedelta(seconds=self.lease),
                self._queues,
            ),
        )

    async def _register_again(self) -> None:
        """This worker's registration is gone: its lease expired (it was presumed dead) or it
        was force-unlocked, and the jobs it held then were released; or the row was deleted
        and its jobs are still locked under its id. It registers again under the same id, so
        it keeps the jobs still locked under it, while results of the released ones are
        rejected all the same (a result must match its claim's lock time too)."""
        log.warning("worker %s lost its registration; registering again", self.id)
        while not self._stopping:
            try:
                await self._register()
                return
            except Exception as exc:
                self._report_error(exc, "registering again (retrying)")
                await asyncio.sleep(1.0)

    def _held_jobs(self) -> list[int]:
        """The jobs this worker is running, about to start, or still has results of."""
        held = set(self._running) | self._landed
        if self._completer is not None:
            held |= self._completer.held
        return list(held)

    async def _heartbeat(self) -> None:
        """Keeps the lease; tells the database which jobs this worker holds, so that a job
        claimed for it whose reply never arrived is released (once older than the lease: a
        claim's reply takes far less); picks up cancel requests a NOTIFY may have missed."""
        grace = timedelta(seconds=self.lease)
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                row = await self._fetchone(self._sql.heartbeat, (self.id, self._held_jobs(), grace))
                assert row is not None
                registered, released, cancel_requested = row
                if not registered:
                    await self._register_again()
                    continue
                if released:
                    log.warning(
                        "worker %s: released %d job(s) claimed for it that it never received"
                        " (the claim's reply was lost): %s",
                        self.id,
                        len(released),
                        released,
                    )
                for job_id in cancel_requested:
                    self._cancel(job_id, "cancelled")
            except Exception as exc:
                self._report_error(exc, "heartbeat (retrying)")

    async def _watch_for_unknown_tasks(self) -> None:
        """Warns, once per task identifier, about ready jobs in this worker's queues that it
        has no handler for: no error ever comes of them, they just wait."""
        while True:
            try:
                assert self._pool is not None
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        self._sql.unknown_tasks, {"tasks": self._task_names, "queues": self._queues}
                    )
                    rows = await cur.fetchall()
                for (identifier,) in rows:
                    if identifier in self._unknown_tasks or len(self._unknown_tasks) >= 1000:
                        continue
                    self._unknown_tasks.add(identifier)
                    log.warning(
                        "worker %s: jobs of task %r are ready, and this worker has no handler"
                        " for it (it handles %s)",
                        self.id,
                        identifier,
                        ", ".join(self._task_names),
                        extra={"task": identifier},
                    )
            except Exception as exc:
                self._report_error(exc, "looking for jobs of unknown tasks (retrying)")
            await asyncio.sleep(self._unknown_tasks_interval)

    async def _run_cron(self, cron: CronScheduler) -> None:
        while True:
            await asyncio.sleep(cron.seconds_to_next_minute() + 0.001)
            try:
                await cron.run_due()
            except Exception as exc:
                self._report_error(exc, "scheduling cron jobs (retrying next minute)")

    # -- plumbing ----------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"kongflow-{name}")
        task.add_done_callback(self._service_done)
        self._services.append(task)

    def _service_done(self, task: asyncio.Task[None]) -> None:
        """The services retry what can fail; should one die all the same, stop the worker rather
        than linger half-alive (its jobs are given back, or rescued after the lease)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        log.critical("worker %s: %s died; stopping", self.id, task.get_name(), exc_info=error)
        self._report_error(error, f"{task.get_name()} died")
        self.failure = error
        self._stopper = asyncio.ensure_future(self.stop(timeout=5))

    def _report_error(self, error: BaseException, context: str) -> None:
        log.warning("worker %s: %s: %s", self.id, context, error)
        self._hooks.emit("error", error, context)

    async def _execute(self, query: str, params: Any) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await conn.execute(query, params)

    async def _fetchone(self, query: str, params: Any) -> Any:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()


async def _cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until they are done. A cancellation can be lost (Python 3.11's
    asyncio.wait_for, which the connection pool uses, may swallow one that arrives as its wait
    ends): a task still running a moment later is cancelled again, rather than waited for
    forever."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


async def _read_times_in_utc(conn: psycopg.AsyncConnection[Any]) -> None:
    """Times come back as UTC datetimes whatever the server's zone: the same instants, and
    decoded about twice as fast as in a named zone (claims decode four per job)."""
    await conn.execute("set time zone 'UTC'")


def _connect_kwargs(pool: AsyncConnectionPool[Any]) -> dict[str, Any]:
    """The pool's connection arguments (credentials passed apart from the URL), for LISTEN."""
    kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
    return {k: v for k, v in kwargs.items() if k != "autocommit"}


def _log_job(level: int, job: RunningJob, message: str, *args: Any, **fields: Any) -> None:
    """A log line about a job: its id, task and queue in the text, and as fields of the record
    (keys of the JSON log format)."""
    log.log(
        level,
        "job %s (task %s, queue %s) " + message,
        job.id,
        job.task_identifier,
        job.queue_name or "-",
        *args,
        extra={
            "job_id": job.id,
            "task": job.task_identifier,
            "queue": job.queue_name,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            **fields,
        },
    )


def _storable_text(text: str) -> str:
    """Text PostgreSQL accepts: no NUL, no lone surrogates."""
    return text.replace("\x00", "\\x00").encode("utf-8", "replace").decode("utf-8")
