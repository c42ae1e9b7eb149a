"""The job engine: schema and migrations, enqueue and administration, and the worker."""

from kongflow.engine.client import Client
from kongflow.engine.errors import InvalidJobError, KongflowError, PermanentFailure, Snooze
from kongflow.engine.hooks import WorkerHooks
from kongflow.engine.models import Job, JobSpec
from kongflow.engine.rates import RateLimit
from kongflow.engine.results import JobCancelled, JobFailed, JobGone, WaitTimeout
from kongflow.engine.settings import WorkerSettings
from kongflow.engine.sync_client import SyncClient
from kongflow.engine.tasks import ExponentialBackoff, FixedBackoff, RunningJob, Task
from kongflow.engine.worker import Worker
from kongflow.engine.workflows import Workflow, WorkflowRun

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
    "RateLimit",
    "RunningJob",
    "Snooze",
    "SyncClient",
    "Task",
    "WaitTimeout",
    "Worker",
    "WorkerHooks",
    "WorkerSettings",
    "Workflow",
    "WorkflowRun",
]
