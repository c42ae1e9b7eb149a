"""Event hooks: subclass WorkerHooks and override what you need (logging, metrics, tracing).

Hooks are called inline on the worker's event loop: keep them quick, and do not raise (an
exception from a hook is logged and ignored)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kongflow.engine.tasks import RunningJob

log = logging.getLogger("kongflow.worker")


class WorkerHooks:
    def job_started(self, job: RunningJob) -> None: ...

    def job_completed(self, job: RunningJob, duration: float) -> None: ...

    def job_retried(self, job: RunningJob, error: BaseException, retry_at: datetime) -> None:
        """An attempt failed and the job will run again at `retry_at`."""

    def job_failed(self, job: RunningJob, error: BaseException) -> None:
        """An attempt failed and the job will not be retried."""

    def job_snoozed(self, job: RunningJob, run_at: datetime) -> None: ...

    def job_cancelled(self, job: RunningJob) -> None: ...

    def jobs_rescued(self, job_ids: Sequence[int]) -> None:
        """Jobs of lost workers were released by this worker's rescue pass."""

    def error(self, error: BaseException, context: str) -> None:
        """The worker hit an error of its own (a database outage, say) and is carrying on."""


class HookSet:
    """Calls every hook, isolating the worker from hooks that raise."""

    def __init__(self, hooks: Sequence[WorkerHooks]) -> None:
        self._hooks = list(hooks)

    def emit(self, event: str, *args: Any) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, event)(*args)
            except Exception:
                log.exception("hook %s.%s raised", type(hook).__name__, event)
