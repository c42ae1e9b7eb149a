"""kongflow: durable background jobs on PostgreSQL. The engine's public API, re-exported."""

from importlib.metadata import PackageNotFoundError, version

from kongflow import engine
from kongflow.engine import *  # noqa: F403 - the engine's public names are kongflow's

__all__ = list(engine.__all__)
try:
    __version__ = version("kongflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
