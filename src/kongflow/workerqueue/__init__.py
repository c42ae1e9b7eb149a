"""The worker queue service: typed tasks over the engine, and trigger.dev's v2 catalog."""

from kongflow.workerqueue.queue import Catalog, Transaction, WorkerQueue
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
    "InvalidPayloadError",
    "NoHandlerError",
    "RecurringTask",
    "TaskDefinition",
    "Transaction",
    "UnknownTaskError",
    "WorkerQueue",
]
