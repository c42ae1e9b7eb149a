"""OpenTelemetry, when installed and configured: an enqueue span whose context travels with the
job (its `headers`), and a span per attempt that continues that trace in the worker. Without the
`opentelemetry` package, or before a tracer provider is set, these do nothing (and cost
nothing on the hot path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - exercised only without the package
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from kongflow.engine.models import Job

_TRACER_NAME = "kongflow"


_configured = False
_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def tracing_enabled() -> bool:
    """Is a tracer provider set? Asked per job, so kept cheap: once one is set it stays
    (OpenTelemetry sets it once); until then, unless the environment names one, the API's
    global is read directly rather than through its environment lookup."""
    global _configured
    if _configured or trace is None:
        return _configured
    if not _FROM_ENVIRONMENT and getattr(trace, "_TRACER_PROVIDER", True) is None:
        return False
    _configured = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _configured


@contextmanager
def enqueue_span(identifier: str, queue_name: str | None) -> Iterator[dict[str, str] | None]:
    """Yields the headers that carry the current trace to the job (None without tracing)."""
    if not tracing_enabled():
        yield None
        return
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"kongflow enqueue {identifier}",
        kind=SpanKind.PRODUCER,
        attributes={"kongflow.task": identifier, "kongflow.queue": queue_name or ""},
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier or None


@contextmanager
def job_span(job: Job) -> Iterator[Any]:
    """A span for one attempt, a child of the span that enqueued the job."""
    if not tracing_enabled():
        yield None
        return
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"kongflow run {job.task_identifier}",
        context=propagate.extract(job.headers or {}),
        kind=SpanKind.CONSUMER,
        attributes={
            "kongflow.task": job.task_identifier,
            "kongflow.queue": job.queue_name or "",
            "kongflow.job_id": job.id,
            "kongflow.attempt": job.attempts,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_failure(span: Any, error: BaseException) -> None:
    if span is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
