"""Prometheus metrics: job counters and run times by task and queue (from the worker's hooks),
and queue depth and the age of the oldest available job per queue (from periodic reports)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kongflow.engine.hooks import WorkerHooks
from kongflow.engine.models import Job
from kongflow.engine.tasks import RunningJob

_LABELS = ("task", "queue")
_STATES = ("available", "scheduled", "running", "failed")


class Metrics(WorkerHooks):
    """Give it to `Worker(metrics=...)` (which also feeds the queue gauges) and to
    `Client(metrics=...)` or `SyncClient(metrics=...)`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()

        def counter(name: str, doc: str, labels: Sequence[str] = _LABELS) -> Counter:
            return Counter(f"kongflow_jobs_{name}", doc, labels, registry=self.registry)

        self.enqueued = counter("enqueued", "Jobs added or replaced.")
        self.started = counter("started", "Attempts started.")
        self.completed = counter("completed", "Jobs completed.")
        self.retried = counter("retried", "Attempts that failed and will be retried.")
        self.failed = counter("failed", "Jobs failed for good.")
        self.snoozed = counter("snoozed", "Attempts snoozed.")
        self.cancelled = counter("cancelled", "Running jobs cancelled.")
        self.rescued = counter("rescued", "Jobs released from lost workers.")
        self.duration = Histogram(
            "kongflow_job_duration_seconds",
            "Handler run time of completed jobs.",
            _LABELS,
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.queue_jobs = Gauge(
            "kongflow_queue_jobs",
            "Jobs per queue and state ('' = no queue).",
            ("queue", "state"),
            registry=self.registry,
        )
        self.oldest_available = Gauge(
            "kongflow_queue_oldest_available_seconds",
            "Age of the oldest job ready to run, per queue.",
            ("queue",),
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics over HTTP (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)

    # -- feeds ---------------------------------------------------------------------------------

    def record_enqueued(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.enqueued.labels(job.task_identifier, job.queue_name or "").inc()

    def record_enqueued_counts(self, counts: Iterable[tuple[str, str | None, int]]) -> None:
        for task, queue, count in counts:
            self.enqueued.labels(task, queue or "").inc(count)

    def record_rescued(self, jobs: Iterable[tuple[str, str | None]]) -> None:
        for task, queue in jobs:
            self.rescued.labels(task, queue or "").inc()

    def report_queues(self, stats: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        self.queue_jobs.clear()
        self.oldest_available.clear()
        for row in stats:
            queue = row["queue_name"] or ""
            for state in _STATES:
                self.queue_jobs.labels(queue, state).set(row[state])
            oldest = row["oldest_available_at"]
            self.oldest_available.labels(queue).set(
                max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
            )

    # -- worker hooks --------------------------------------------------------------------------

    @staticmethod
    def _labels(job: RunningJob) -> tuple[str, str]:
        return job.task_identifier, job.queue_name or ""

    def job_started(self, job: RunningJob) -> None:
        self.started.labels(*self._labels(job)).inc()

    def job_completed(self, job: RunningJob, duration: float) -> None:
        self.completed.labels(*self._labels(job)).inc()
        self.duration.labels(*self._labels(job)).observe(duration)

    def job_retried(self, job: RunningJob, error: BaseException, retry_at: datetime) -> None:
        self.retried.labels(*self._labels(job)).inc()

    def job_failed(self, job: RunningJob, error: BaseException) -> None:
        self.failed.labels(*self._labels(job)).inc()

    def job_snoozed(self, job: RunningJob, run_at: datetime) -> None:
        self.snoozed.labels(*self._labels(job)).inc()

    def job_cancelled(self, job: RunningJob) -> None:
        self.cancelled.labels(*self._labels(job)).inc()
