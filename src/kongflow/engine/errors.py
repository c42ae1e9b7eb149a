"""Exceptions raised by the engine."""

from __future__ import annotations


class KongflowError(Exception):
    """Base class of kongflow's errors."""


class InvalidJobError(KongflowError, ValueError):
    """A job argument is invalid; nothing was written."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


class Snooze(Exception):
    """Raise from a handler to run the job again after `delay` seconds without spending an
    attempt."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"snoozed for {delay}s")
        self.delay = float(delay)


class PermanentFailure(Exception):
    """Raise from a handler to fail the job at once, with no retries left."""


class JobTimeout(TimeoutError):
    """A handler ran longer than its task's timeout."""


class WorkerLost(KongflowError):
    """The worker's lease expired: its jobs were released and it must register again."""
