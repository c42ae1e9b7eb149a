"""The engine's current functions and views: one definition of each, in a file named for what it
does, with its settings (`set jit = off`, plan caching) as part of the definition.

The migration runner applies a file again whenever its text changes (see `kongflow.engine.migrate`),
so a function is changed by editing it here, never by a migration. A view's columns may only be
added at its end (`create or replace view`); anything else needs a migration that drops it first.
A function whose arguments or result type change, or that is removed, needs a migration that drops
the old signature.

A clause that several functions share on a hot path, where a call would cost too much, is kept
once in `include/` and spliced in by a line `:INCLUDE(<file>)` (see `kongflow.engine.migrate`).

FILES is the order of application: a file may use what the files before it define (SQL-language
bodies are checked when they are created; the views come first since functions return their rows).
"""

FILES = (
    "views.sql",
    "queues.sql",
    "enqueue.sql",
    "claim.sql",
    "settle.sql",
    "workflows.sql",
    "rescue.sql",
    "admin.sql",
    "cron.sql",
    "maintenance.sql",
)
