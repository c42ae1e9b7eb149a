"""The jobs service's current functions and triggers, one definition each, applied after the
engine's whenever their text changes (see `kongflow.engine.definitions` for the rules)."""

FILES = ("runs.sql",)
