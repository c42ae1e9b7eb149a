"""kongflow: durable background jobs on PostgreSQL. The engine's public API, re-exported."""

from kongflow import queue
from kongflow.queue import *  # noqa: F403 - the engine's public names are kongflow's

__all__ = list(queue.__all__)
__version__ = "0.1.0"
