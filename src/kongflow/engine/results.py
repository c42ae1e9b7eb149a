"""Awaiting a job's outcome (`Client.wait_for`, `SyncClient.wait_for`): its result once it
completes, or the reason it never will.

A waiter registers in `_result_waits` (under a share lock on the job's row, which orders it
against whatever settles the job), then reads the job. Whatever settles a job someone waits for
(a worker's result, a cancel, a permanent failure, a delete, a lost worker's last attempt)
announces it on the schema's `settled` channel, so the waiter reads it again only when woken:
there is no polling. Each client holds one LISTEN connection for all of its waits, opened with
the first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from kongflow.engine.errors import KongflowError
from kongflow.engine.listener import listen
from kongflow.engine.models import Job

log = logging.getLogger("kongflow.results")


class JobFailed(KongflowError):
    """The job failed for good: its attempts are spent, or it was failed permanently."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(
            f"job {job.id} ({job.task_identifier}) failed after {job.attempts} attempt(s):"
            f" {job.last_error}"
        )


class JobCancelled(KongflowError):
    """The job was cancelled before it completed."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id} ({job.task_identifier}) was cancelled")


class JobGone(KongflowError):
    """The job is not in the database (any more)."""

    def __init__(self, job_id: int, settled: bool) -> None:
        self.job_id = job_id
        if settled:
            reason = "it finished and was removed before its outcome could be read (deleted, or"
            reason += " not kept: completed_retention)"
        else:
            reason = "no such job, or it finished and was removed by retention or deleted"
        super().__init__(f"job {job_id} is not in the database: {reason}")


class WaitTimeout(KongflowError, TimeoutError):
    """The job did not settle within the time given to wait for it."""

    def __init__(self, job_id: int, timeout: float) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} did not settle within {timeout:g}s")


def outcome(job_id: int, job: Job | None, settled: bool) -> tuple[bool, Any]:
    """(True, result) for a completed job, (False, None) for one still to settle; raises for a
    job that failed for good, was cancelled or is gone. `settled`: its settling was announced."""
    if job is None:
        raise JobGone(job_id, settled)
    if job.state == "completed":
        return True, job.result
    if job.state == "failed":
        raise JobFailed(job)
    if job.state == "cancelled":
        raise JobCancelled(job)
    return False, None


def announced_ids(payload: str) -> list[int]:
    """The job ids of a `settled` notification."""
    return [int(part) for part in payload.split(",") if part.isdigit()]


class SettledListener:
    """One LISTEN connection on a schema's `settled` channel, shared by a client's waits: each
    notification wakes the waits of the jobs it names; a reconnection wakes them all (what was
    announced meanwhile is lost, so each reads its job again)."""

    def __init__(self, conninfo: str, connect_kwargs: Mapping[str, Any], channel: str) -> None:
        self._conninfo = conninfo
        self._kwargs = {k: v for k, v in connect_kwargs.items() if k != "autocommit"}
        self._channel = channel
        self._waits: dict[int, set[asyncio.Event]] = {}
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                listen(
                    self._conninfo,
                    self._kwargs,
                    [self._channel],
                    self._notified,
                    self._reconnected,
                    self._failed,
                ),
                name="kongflow-settled-listener",
            )
        await self._connected.wait()

    def subscribe(self, job_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waits.setdefault(job_id, set()).add(event)
        return event

    def unsubscribe(self, job_id: int, event: asyncio.Event) -> None:
        events = self._waits.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._waits[job_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._connected.clear()

    def _notified(self, channel: str, payload: str) -> None:
        for job_id in announced_ids(payload):
            for event in self._waits.get(job_id, ()):
                event.set()

    def _reconnected(self) -> None:
        self._connected.set()
        for events in self._waits.values():
            for event in events:
                event.set()

    def _failed(self, exc: BaseException, doing: str) -> None:
        log.warning("%s: %s", doing, exc)
