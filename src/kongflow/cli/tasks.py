"""`kongflow tasks`: trigger.dev's task catalog and which handlers this installation has."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.table import Table

from kongflow.cli.common import console, require_extra


def catalog_handlers() -> set[str]:
    """The catalog's tasks that `kongflow serve`'s worker handles here (scheduleEmail only with
    KONGFLOW_SMTP_URL set)."""
    from kongflow.service.email import SmtpSettings
    from kongflow.service.service import JobsOptions, JobsService

    smtp = SmtpSettings.from_env() if os.environ.get("KONGFLOW_SMTP_URL") else None
    return set(JobsService(options=JobsOptions(smtp=smtp)).queue.handlers)


def tasks(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List trigger.dev's task catalog: queue, priority, attempts, timeout, and whether the
    jobs service's worker handles it."""
    require_extra("service", "kongflow tasks")
    from kongflow.service.catalog import TRIGGER_CATALOG

    handlers = catalog_handlers()
    rows = [
        {
            "identifier": identifier,
            "queue": definition.describe_queue(),
            "priority": definition.priority if definition.priority is not None else 0,
            "max_attempts": definition.max_attempts or 25,
            "timeout": definition.timeout,
            "handler": identifier in handlers,
        }
        for identifier, definition in TRIGGER_CATALOG.items()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="task catalog")
    for column in ("identifier", "queue", "priority", "max attempts", "timeout", "handler"):
        numeric = column in ("priority", "max attempts")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(
            str(row["identifier"]),
            str(row["queue"] or "-"),
            str(row["priority"]),
            str(row["max_attempts"]),
            f"{row['timeout']:g}s" if row["timeout"] else "-",
            "yes" if row["handler"] else "[dim]no[/dim]",
        )
    console.print(table)
