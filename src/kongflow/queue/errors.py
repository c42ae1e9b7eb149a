"""Exceptions raised by the engine."""

from __future__ import annotations


class KongflowError(Exception):
    """Base class of kongflow's errors."""


class InvalidJobError(KongflowError, ValueError):
    """A job argument is invalid; nothing was written."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
