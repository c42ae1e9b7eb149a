"""The tasks of a Django project: registered with `@task` in installed apps' `tasks` modules,
run by `manage.py kongflow worker` (which loads `kongflow.integrations.django.registry:TASKS`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import close_old_connections

from kongflow.engine.tasks import DEFAULT_RETRY, RetryPolicy, Task

H = TypeVar("H", bound=Callable[..., Any])

TASKS: dict[str, Task] = {}
"""Every task registered with `@task`, by identifier."""


def task(
    identifier: str,
    *,
    timeout: float | None = None,
    retry: RetryPolicy | Callable[[int], float] = DEFAULT_RETRY,
) -> Callable[[H], H]:
    """Register the decorated handler, `handler(payload, job)`, for `identifier`. A plain
    function runs in a worker thread with Django's connections closed after it, as a request's
    are; an async one runs on the event loop (use Django's async ORM there)."""

    def register(handler: H) -> H:
        if identifier in TASKS:
            raise ValueError(f"task {identifier!r} is registered twice")
        run = handler if inspect.iscoroutinefunction(handler) else _closing_connections(handler)
        TASKS[identifier] = Task(run, timeout=timeout, retry=retry)
        return handler

    return register


def _closing_connections(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def run(payload: Any, job: Any) -> Any:
        close_old_connections()
        try:
            return handler(payload, job)
        finally:
            close_old_connections()

    return run
