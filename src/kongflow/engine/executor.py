"""Runs claimed jobs: each job's handler (plain ones in a thread pool) under its timeout,
cancellable, inside its span; then turns what happened into an outcome for the completer, with
the hooks told and failed attempts logged.

Everything that decides what a job's attempt came to lives here, apart from claiming (the
producer) and writing (the completer), so the rules for timeouts, cancellation and retries are
read in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from kongflow.engine.completer import COMPLETED
from kongflow.engine.errors import JobTimeout, PermanentFailure, Snooze
from kongflow.engine.hooks import HookSet
from kongflow.engine.models import unstorable_reason
from kongflow.engine.tasks import RunningJob, Task
from kongflow.engine.tracing import job_span, record_failure, tracing_enabled

log = logging.getLogger("kongflow.worker")

_MAX_TRACEBACK = 8000
_NO_SPAN = nullcontext()
Fence = tuple[str, str]  # a claim's locked_by and locked_at: results are accepted only under it
# The completer's submit: worker id, job id, locked_at, outcome.
Submit = Callable[[str, int, str, dict[str, Any]], None]


class Executor:
    """Runs claimed jobs, each in its own asyncio task; `running` maps job ids to them.

    `submit` receives each outcome; `on_finished` is called after every job (the producer may
    want to look for work)."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        hooks: HookSet,
        submit: Submit,
        on_finished: Callable[[], None],
        threads: int,
    ) -> None:
        self.tasks = tasks
        self.running: dict[int, tuple[RunningJob, asyncio.Task[None]]] = {}
        self._emit = hooks.emit
        self._submit = submit
        self._on_finished = on_finished
        self._cancel_reasons: dict[int, str] = {}
        self._early_cancels: set[int] = set()
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="kongflow-job")

    def start(self, job: RunningJob, fence: Fence) -> None:
        task = asyncio.create_task(self._run(job, fence))
        self.running[job.id] = (job, task)
        if job.cancel_requested_at is not None or job.id in self._early_cancels:
            self._early_cancels.discard(job.id)
            self.cancel(job.id, "cancelled")

    def cancel(self, job_id: int, reason: str) -> None:
        """Cancel a running job: "cancelled" (asked for: the job ends cancelled) or "shutdown"
        (it goes back to the queue)."""
        entry = self.running.get(job_id)
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

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _run(self, job: RunningJob, fence: Fence) -> None:
        self._emit("job_started", job)
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
                self._submit(fence[0], job.id, fence[1], {"outcome": "cancelled"})
                self._emit("job_cancelled", job)
            else:
                self._submit(fence[0], job.id, fence[1], {"outcome": "returned"})
        except Snooze as snooze:
            run_at = datetime.now(UTC) + timedelta(seconds=snooze.delay)
            outcome = {"outcome": "snoozed", "run_at": run_at.isoformat()}
            self._submit(fence[0], job.id, fence[1], outcome)
            self._emit("job_snoozed", job, run_at)
        except Exception as error:
            self._record_failure(fence, job, task, error)
        else:
            stored = result
            if result is not None and (reason := unstorable_reason(result)) is not None:
                stored = None
                log_job(
                    logging.WARNING,
                    job,
                    "completed, but its result cannot be stored (%s): kept without a result",
                    reason,
                    error=reason,
                )
            self._submit(
                fence[0],
                job.id,
                fence[1],
                COMPLETED if stored is None else {"outcome": "completed", "result": stored},
            )
            self._emit("job_completed", job, time.monotonic() - started)
        finally:
            self.running.pop(job.id, None)
            self._cancel_reasons.pop(job.id, None)
            self._on_finished()

    async def _call(self, task: Task, job: RunningJob) -> Any:
        if task.is_async:
            if task.timeout is None:  # the common case, one frame fewer per job
                return await task.handler(job.payload, job)
            return await _with_timeout(task, job, task.handler(job.payload, job))
        # A thread cannot be interrupted: on timeout or cancel it is told (job.cancelled) and
        # awaited, so its slot stays taken and the job is not released while it still runs.
        loop = asyncio.get_running_loop()
        thread = loop.run_in_executor(self._threads, task.handler, job.payload, job)
        try:
            return await _with_timeout(task, job, asyncio.shield(thread))
        except BaseException:
            job.cancelled.set()
            await asyncio.wait([thread])
            raise

    def _record_failure(
        self, fence: Fence, job: RunningJob, task: Task | None, error: BaseException
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
            log_job(
                logging.WARNING,
                job,
                "attempt %d/%d failed, no retry: %s",
                job.attempts,
                job.max_attempts,
                details["message"],
                error=details["message"],
            )
            outcome = {"outcome": "failed_permanently", "error": details}
            self._submit(fence[0], job.id, fence[1], outcome)
            self._emit("job_failed", job, error)
            return
        retry_at = datetime.now(UTC) + timedelta(seconds=task.retry_delay(job.attempts))
        log_job(
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
        outcome = {"outcome": "failed", "run_at": retry_at.isoformat(), "error": details}
        self._submit(fence[0], job.id, fence[1], outcome)
        self._emit("job_retried", job, error, retry_at)


async def _with_timeout(task: Task, job: RunningJob, call: Awaitable[Any]) -> Any:
    if task.timeout is None:
        return await call
    try:
        async with asyncio.timeout(task.timeout):
            return await call
    except TimeoutError:
        job.cancelled.set()
        raise JobTimeout(f"job timed out after {task.timeout}s") from None


def log_job(level: int, job: RunningJob, message: str, *args: Any, **fields: Any) -> None:
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
