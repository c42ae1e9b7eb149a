"""kongflow: durable background jobs on PostgreSQL."""

from kongflow.queue import Client, InvalidJobError, Job, JobSpec, KongflowError

__all__ = ["Client", "InvalidJobError", "Job", "JobSpec", "KongflowError"]
__version__ = "0.1.0"
