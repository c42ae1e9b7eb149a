"""The job engine: schema and migrations, enqueue and administration (the worker comes next)."""

from kongflow.queue.client import Client
from kongflow.queue.errors import InvalidJobError, KongflowError
from kongflow.queue.models import Job, JobSpec

__all__ = ["Client", "InvalidJobError", "Job", "JobSpec", "KongflowError"]
