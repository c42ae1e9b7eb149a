"""The worker: assembles the parts that claim, run, record and keep the lease, and owns their
start, stop and drain.

Its parts run as asyncio tasks: the producer (producer.py) claims jobs into free slots; the
executor (executor.py) runs each job in its own task (plain handlers in a thread pool); the
completer (completer.py) writes outcomes in batches; the lease (lease.py) registers the worker
and heartbeats; the listener (listener.py) wakes the producer and delivers cancellations; the
leader's maintenance (maintenance.py) rescues jobs of lost workers and cleans up; cron and the
unknown-task warnings (unknown_tasks.py) run at their own pace.

Longer than its parts (some 440 lines), because start and stop order them against each other
(listen before claiming; let claims land, jobs end and results be written before deregistering),
which reads best in one place.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kongflow.engine import unknown_tasks
from kongflow.engine.completer import Completer
from kongflow.engine.cron import CronItem, CronScheduler
from kongflow.engine.executor import Executor
from kongflow.engine.hooks import HookSet
from kongflow.engine.lease import Lease, new_worker_id
from kongflow.engine.listener import listen
from kongflow.engine.maintenance import Maintenance
from kongflow.engine.migrate import channels, migrate
from kongflow.engine.pool import connect_kwargs, open_pool
from kongflow.engine.producer import Producer, WakeUps
from kongflow.engine.rates import rate_limits_document
from kongflow.engine.settings import DEFAULT_MAINTENANCE, WorkerSettings
from kongflow.engine.sql import engine_sql
from kongflow.engine.tasks import Handler, RunningJob, Task, as_tasks

if TYPE_CHECKING:  # prometheus_client loads only where metrics are used
    from kongflow.engine.metrics import Metrics

log = logging.getLogger("kongflow.worker")

_DB_ERRORS = (psycopg.OperationalError, PoolTimeout)
# The worker's own pool: claims, settling, heartbeat and maintenance share a few connections
# (LISTEN has its own); a connection not free within `timeout` is an outage to retry.
_POOL_MIN, _POOL_MAX, _POOL_TIMEOUT = 2, 4, 10.0


class Worker:
    """Runs jobs of the given tasks: `async with Worker(url, tasks={...}): ...` or `await
    worker.run()`.

    Options are a WorkerSettings (`settings=`), or its fields as keywords (`concurrency=20`),
    which are applied over `settings` if both are given; see WorkerSettings for each one.
    """

    # Seconds between two looks for ready jobs of tasks this worker has no handler for.
    _unknown_tasks_interval = unknown_tasks.INTERVAL

    def __init__(
        self,
        database: str | AsyncConnectionPool[Any] | None = None,
        tasks: Mapping[str, Handler | Task] | None = None,
        *,
        settings: WorkerSettings | None = None,
        **options: Any,
    ) -> None:
        self.settings = settings = WorkerSettings.of(settings, options)
        self.tasks = as_tasks(tasks or {})
        self.id = new_worker_id()
        self._database = database
        self._pool: AsyncConnectionPool[Any] | None = (
            database if isinstance(database, AsyncConnectionPool) else None
        )
        self._owns_pool = self._pool is None
        self._sql = engine_sql(settings.schema)
        hooks = list(settings.hooks)
        reporters = list(settings.queue_reporters)
        if settings.metrics is not None:
            hooks.append(settings.metrics)
            reporters.append(settings.metrics.report_queues)
        self._queue_reporters = reporters
        self._hooks = HookSet(hooks)
        self._task_names = sorted(self.tasks)

        self._stopping = False
        self._started = False
        self._stopped = asyncio.Event()
        self._services: list[asyncio.Task[None]] = []
        # The parts, made at start (they need the pool).
        self._wakeups: WakeUps | None = None
        self._completer: Completer | None = None
        self._executor: Executor | None = None
        self._producer: Producer | None = None
        self._lease: Lease | None = None
        self.maintenance: Maintenance | None = None
        self.cron: CronScheduler | None = None
        self.failure: BaseException | None = None  # why the worker stopped on its own, if it did
        self._stopper: asyncio.Future[None] | None = None

    # -- the settings, as attributes -----------------------------------------------------------

    @property
    def schema(self) -> str:
        return self.settings.schema

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval

    @property
    def poll_only(self) -> bool:
        return self.settings.poll_only

    @property
    def lease(self) -> float:
        return self.settings.lease

    @property
    def heartbeat_interval(self) -> float:
        return self.settings.heartbeat_seconds

    @property
    def cron_items(self) -> list[CronItem]:
        return list(self.settings.cron_items)

    @property
    def metrics(self) -> Metrics | None:
        return self.settings.metrics

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("this worker was already started")
        self._started = True
        settings = self.settings
        if self._pool is None:
            assert not isinstance(self._database, AsyncConnectionPool)
            self._pool = await open_pool(
                self._database,
                purpose="worker",
                min_size=_POOL_MIN,
                max_size=_POOL_MAX,
                timeout=_POOL_TIMEOUT,
                utc_sessions=True,
                prepared_statements=not settings.poll_only,  # poll-only: behind a pooler
            )
        pool = self._pool
        self._assemble(pool)
        assert self._lease is not None and self._completer is not None
        assert self._producer is not None and self._wakeups is not None
        if settings.migrate:
            async with pool.connection() as conn:
                await migrate(conn, settings.schema)
        if settings.queue_limits:
            async with pool.connection() as conn:
                limits = json.dumps(dict(settings.queue_limits))
                await conn.execute(self._sql.set_queue_limits, (limits,))
        if settings.rate_limits:
            async with pool.connection() as conn:
                rates = json.dumps(rate_limits_document(settings.rate_limits))
                await conn.execute(self._sql.set_rate_limits, (rates,))
        await self._lease.register()
        if not settings.poll_only:
            # Listen before claiming, so no cancellation or wake-up is missed after start().
            names = channels(settings.schema)
            connected = asyncio.Event()
            wake = self._wakeups.wake

            def on_connected() -> None:
                connected.set()
                wake()

            self._spawn(
                listen(
                    str(pool.conninfo),
                    connect_kwargs(pool),
                    [names["jobs"], names["cancel"]],
                    self._on_notify,
                    on_connected,
                    self._report_error,
                ),
                "listener",
            )
            await asyncio.wait_for(connected.wait(), 30)
        self._spawn(self._completer.run(), "completer")
        self._spawn(self._producer.run(), "producer")
        self._spawn(self._lease.run(), "heartbeat")
        watcher = unknown_tasks.UnknownTaskWatcher(
            pool=pool,
            unknown_tasks_sql=self._sql.unknown_tasks,
            worker_id=self.id,
            task_names=self._task_names,
            queues=settings.queue_patterns,
            interval=self._unknown_tasks_interval,
            on_error=self._report_error,
        )
        self._spawn(watcher.run(), "unknown-tasks")
        self.maintenance = Maintenance(
            pool,
            self._sql,
            lambda: self.id,
            settings.lease,
            settings.maintenance or DEFAULT_MAINTENANCE,
            self._hooks,
            self._queue_reporters,
            settings.metrics.record_rescued if settings.metrics else None,
            lead=settings.maintenance is not None,
        )
        self._spawn(self.maintenance.run(), "maintenance")
        if settings.cron_items:
            unhandled = sorted({i.task for i in settings.cron_items} - set(self.tasks))
            if unhandled:
                log.warning("crontab tasks with no handler in this worker: %s", unhandled)
            self.cron = CronScheduler(pool, self._sql, list(settings.cron_items))
            await self.cron.start()
            self._spawn(self._run_cron(self.cron), "cron")
        log.info(
            "worker %s started: %d task(s), concurrency %d",
            self.id,
            len(self.tasks),
            settings.concurrency,
        )

    def _assemble(self, pool: AsyncConnectionPool[Any]) -> None:
        """Make the parts and connect them: each is handed the bound methods it calls, so the
        per-job paths make no lookups through the worker."""
        settings = self.settings
        maintenance = settings.maintenance
        keep_completed = maintenance is None or maintenance.completed_retention > timedelta(0)
        wakeups = WakeUps(settings.poll_only or callable(settings.forbidden_flags))
        landed: set[int] = set()  # claimed, not started yet: held all the same
        completer = Completer(
            pool, self._sql.settle_jobs, keep_completed, wakeups.look_again, self._report_error
        )
        executor = Executor(
            self.tasks,
            self._hooks,
            completer.submit,
            wakeups.look_again,
            threads=settings.concurrency,
        )
        lease = Lease(
            pool=pool,
            sql=self._sql,
            worker_id=self.id,
            task_names=self._task_names,
            settings=settings,
            running=executor.running,
            landed=landed,
            completer=completer,
            cancel=executor.cancel,
            on_error=self._report_error,
        )
        producer = Producer(
            pool=pool,
            claim_sql=self._sql.claim_jobs,
            worker_id=self.id,
            task_names=self._task_names,
            settings=settings,
            wakeups=wakeups,
            running=executor.running,
            landed=landed,
            completer=completer,
            start_job=executor.start,
            on_lost=lease.register_again,
            on_error=self._report_error,
        )
        self._wakeups, self._completer, self._executor = wakeups, completer, executor
        self._lease, self._producer = lease, producer

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
        executor, lease = self._executor, self._lease
        if lease is not None:
            lease.stopping = True
        if self._producer is not None:
            self._producer.stop()
        # Let a claim in flight land first, so every job it took is waited for below.
        producer = next((t for t in self._services if t.get_name() == "kongflow-producer"), None)
        if producer is not None:
            await asyncio.wait([producer], timeout=max(timeout, 5))
        if executor is not None:
            jobs = [task for _, task in executor.running.values()]
            if jobs:
                _, late = await asyncio.wait(jobs, timeout=timeout)
                for task in late:
                    job_id = next(j.id for j, t in executor.running.values() if t is task)
                    executor.cancel(job_id, "shutdown")
                if late:
                    await asyncio.wait(late, timeout=5)
        flushed = await self._flush(timeout=max(timeout, 5))
        await _cancel_all(self._services)
        if flushed and lease is not None:
            try:
                await lease.release()
            except _DB_ERRORS as exc:
                self._report_error(exc, "deregistering (the lease will expire instead)")
        if executor is not None:
            executor.shutdown()
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
        self._stopped.set()
        log.info("worker %s stopped", self.id)

    async def drain(self) -> None:
        """Return once no job this worker could take is ready and none is running here."""
        producer, executor, completer = self._producer, self._executor, self._completer
        if producer is None or executor is None or completer is None or self._wakeups is None:
            raise RuntimeError("the worker is not started: use `async with Worker(...)` or start()")
        assert self._pool is not None
        running = executor.running
        while True:
            if not running and not producer.claiming and not completer.backlog:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        self._sql.has_ready_jobs,
                        {
                            "tasks": self._task_names,
                            "forbidden": await producer.forbidden(),
                            "queues": self.settings.queue_patterns,
                        },
                    )
                    row = await cur.fetchone()
                if row is not None and not row[0] and not running:
                    return
            self._wakeups.wake()
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
        if self._executor is None:
            return []
        return [job for job, _ in self._executor.running.values()]

    @property
    def rejected_results(self) -> int:
        """Results dropped because this worker had lost the job (fencing)."""
        return self._completer.rejected if self._completer else 0

    @property
    def producer(self) -> Producer | None:
        """The part that claims jobs (None before start)."""
        return self._producer

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel.endswith(":cancel"):
            if payload.isdigit() and self._executor is not None:
                self._executor.cancel(int(payload), "cancelled")
        elif self._wakeups is not None:
            self._wakeups.wake()

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
