"""What a worker runs: handlers, their options, and retry policies."""

from __future__ import annotations

import inspect
import math
import random
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kongflow.engine.models import Job


class CancelSignal:
    """`threading.Event`'s is_set/wait/set, with the Event made only when a thread waits: most
    jobs never wait on it, and an Event (a Condition and a lock) costs more than the job."""

    __slots__ = ("_event", "_flag")

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True  # before reading _event: see wait()
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        event = self._event
        if event is None:
            event = self._event = threading.Event()  # published before the flag is read
        if self._flag:
            return True
        return event.wait(timeout)


@dataclass(frozen=True)
class RunningJob(Job):
    """The job a handler is running, with a cancellation signal.

    `cancelled` is set when the job is cancelled, times out or the worker shuts down. An async
    handler is also cancelled directly; a plain (threaded) handler should check `cancelled`."""

    cancelled: CancelSignal = field(default_factory=CancelSignal, compare=False)

    @staticmethod
    def _add_runtime_state(state: dict[str, Any]) -> None:
        state["cancelled"] = CancelSignal()


Handler = Callable[[Any, RunningJob], Awaitable[Any]] | Callable[[Any, RunningJob], Any]


class RetryPolicy(Protocol):
    def delay(self, attempts: int) -> float:
        """Seconds to wait before the next try, after `attempts` attempts failed."""
        ...


@dataclass(frozen=True)
class ExponentialBackoff:
    """`base ** min(attempts, max_exponent)` seconds, times a random factor within +/- jitter.
    The default is graphile-worker's `exp(min(attempts, 10))`."""

    base: float = math.e
    max_exponent: int = 10
    jitter: float = 0.0

    def delay(self, attempts: int) -> float:
        seconds = self.base ** min(attempts, self.max_exponent)
        if self.jitter:
            seconds *= 1 + random.uniform(-self.jitter, self.jitter)
        return seconds


@dataclass(frozen=True)
class FixedBackoff:
    seconds: float

    def delay(self, attempts: int) -> float:
        return self.seconds


@dataclass(frozen=True)
class _FunctionBackoff:
    function: Callable[[int], float]

    def delay(self, attempts: int) -> float:
        return float(self.function(attempts))


DEFAULT_RETRY = ExponentialBackoff()


@dataclass(frozen=True)
class Task:
    """A handler with its options: `timeout` in seconds, `retry` a policy or a function of the
    number of attempts made, returning seconds."""

    handler: Handler
    timeout: float | None = None
    retry: RetryPolicy | Callable[[int], float] = DEFAULT_RETRY
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise TypeError(f"a task handler must be callable, got {self.handler!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        is_async = inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(
            getattr(self.handler, "__call__", None)  # noqa: B004 - async callable objects
        )
        object.__setattr__(self, "is_async", is_async)
        if not hasattr(self.retry, "delay"):
            object.__setattr__(self, "retry", _FunctionBackoff(self.retry))

    def retry_delay(self, attempts: int) -> float:
        return max(0.0, self.retry.delay(attempts))  # type: ignore[union-attr]


def as_tasks(tasks: Mapping[str, Handler | Task]) -> dict[str, Task]:
    """Normalise `{identifier: handler or Task}`."""
    if not tasks:
        raise ValueError("a worker needs at least one task")
    result = {}
    for identifier, task in tasks.items():
        if not isinstance(identifier, str) or not identifier:
            raise ValueError(f"task identifiers must be non-empty strings, got {identifier!r}")
        result[identifier] = task if isinstance(task, Task) else Task(task)
    return result
