"""The worker queue service: typed tasks over the engine (trigger.dev's v2 catalog is the jobs
service's, in kongflow.jobs.catalog)."""

from kongflow.workerqueue.queue import (
    Catalog,
    EnqueueOptions,
    TaskPayload,
    Transaction,
    WorkerQueue,
)
from kongflow.workerqueue.task import (
    CronPayload,
    InvalidPayloadError,
    NoHandlerError,
    RecurringTask,
    TaskDefinition,
    UnknownTaskError,
)

__all__ = [
    "Catalog",
    "CronPayload",
    "EnqueueOptions",
    "InvalidPayloadError",
    "NoHandlerError",
    "RecurringTask",
    "TaskDefinition",
    "TaskPayload",
    "Transaction",
    "UnknownTaskError",
    "WorkerQueue",
]
