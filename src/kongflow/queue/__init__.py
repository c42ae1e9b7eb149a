"""The job engine: schema and migrations, enqueue and administration, and the worker."""

from kongflow.queue.client import Client
from kongflow.queue.errors import InvalidJobError, KongflowError, PermanentFailure, Snooze
from kongflow.queue.hooks import WorkerHooks
from kongflow.queue.models import Job, JobSpec
from kongflow.queue.settings import WorkerSettings
from kongflow.queue.tasks import ExponentialBackoff, FixedBackoff, RunningJob, Task
from kongflow.queue.worker import Worker

__all__ = [
    "Client",
    "ExponentialBackoff",
    "FixedBackoff",
    "InvalidJobError",
    "Job",
    "JobSpec",
    "KongflowError",
    "PermanentFailure",
    "RunningJob",
    "Snooze",
    "Task",
    "Worker",
    "WorkerHooks",
    "WorkerSettings",
]
