"""The worker queue service: typed tasks over the engine (trigger.dev's v2 catalog is the jobs
service's, in kongflow.service.catalog)."""

from kongflow.typed.queue import (
    Catalog,
    EnqueueOptions,
    TaskPayload,
    Transaction,
    WorkerQueue,
)
from kongflow.typed.task import (
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
