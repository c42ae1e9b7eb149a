"""kongflow: durable background jobs on PostgreSQL."""

from kongflow.queue import (
    Client,
    ExponentialBackoff,
    FixedBackoff,
    InvalidJobError,
    Job,
    JobSpec,
    KongflowError,
    PermanentFailure,
    RunningJob,
    Snooze,
    Task,
    Worker,
    WorkerHooks,
)

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
]
__version__ = "0.1.0"
