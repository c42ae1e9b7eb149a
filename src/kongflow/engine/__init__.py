"""The job engine: schema and migrations, enqueue and administration, and the worker."""

from kongflow.engine.client import Client
from kongflow.engine.errors import InvalidJobError, KongflowError, PermanentFailure, Snooze
from kongflow.engine.hooks import WorkerHooks
from kongflow.engine.models import Job, JobSpec
from kongflow.engine.results import JobCancelled, JobFailed, JobGone, WaitTimeout
from kongflow.engine.settings import WorkerSettings
from kongflow.engine.sync_client import SyncClient
from kongflow.engine.tasks import ExponentialBackoff, FixedBackoff, RunningJob, Task
from kongflow.engine.worker import Worker

__all__ = [
    "Client",
    "ExponentialBackoff",
    "FixedBackoff",
    "InvalidJobError",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobGone",
    "JobSpec",
    "KongflowError",
    "PermanentFailure",
    "RunningJob",
    "Snooze",
    "SyncClient",
    "Task",
    "WaitTimeout",
    "Worker",
    "WorkerHooks",
    "WorkerSettings",
]
