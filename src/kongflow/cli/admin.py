"""`kongflow queues ...`, `kongflow jobs ...` and `kongflow cleanup`: inspect and act."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kongflow.cli.common import DatabaseUrl, Schema, console, err, fail, with_client
from kongflow.queue.client import Client
from kongflow.queue.cron import parse_duration
from kongflow.queue.maintenance import MaintenanceOptions, cleanup_jobs
from kongflow.queue.models import Job
from kongflow.queue.sql import engine_sql
from kongflow.settings import DEFAULT_SCHEMA

queues_app = typer.Typer(help="Queues: jobs by state, limits, pause and resume.")
jobs_app = typer.Typer(help="List, show, retry, cancel and remove jobs.", no_args_is_help=True)

JobIds = Annotated[list[int], typer.Argument(help="Job ids.")]
STATES = ("available", "scheduled", "running", "failed", "completed", "cancelled")


def _age(since: datetime | None) -> str:
    if since is None:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@queues_app.callback(invoke_without_command=True)
def queues(
    ctx: typer.Context, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA
) -> None:
    """Per queue: jobs by state, age of the oldest ready job, limit, paused."""
    if ctx.invoked_subcommand is not None:
        return
    stats = with_client(database_url, schema, lambda c: c.queue_stats())
    table = Table(title=f"queues in {schema}")
    for column in ("queue", "available", "scheduled", "running", "failed", "oldest", "limit"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    table.add_column("paused")
    for row in stats:
        table.add_row(
            row["queue_name"] or "[dim](no queue)[/dim]",
            *(str(row[s]) for s in ("available", "scheduled", "running", "failed")),
            _age(row["oldest_available_at"]),
            str(row["max_running"]) if row["max_running"] else "-",
            "[yellow]paused[/yellow]" if row["paused"] else "",
        )
    console.print(table if stats else "no jobs and no queues")


@queues_app.command("pause")
def pause(name: str, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Hold a queue for every worker (running jobs finish)."""
    with_client(database_url, schema, lambda c: c.pause_queue(name))
    console.print(f"queue {name!r} paused")


@queues_app.command("resume")
def resume(name: str, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Let workers take jobs from a paused queue again."""
    with_client(database_url, schema, lambda c: c.resume_queue(name))
    console.print(f"queue {name!r} resumed")


@jobs_app.command("list")
def list_jobs(
    state: Annotated[str | None, typer.Option(help=f"One of: {', '.join(STATES)}.")] = None,
    task: Annotated[str | None, typer.Option(help="Task identifier.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue name.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Newest jobs first, filtered by state, task or queue."""
    if state is not None and state not in STATES:
        raise fail(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    jobs = with_client(
        database_url,
        schema,
        lambda c: c.list_jobs(state=state, task=task, queue=queue, limit=limit),
    )
    table = Table(title=f"jobs in {schema}")
    for column in ("id", "task", "queue", "state", "attempts", "run at", "last error"):
        table.add_column(column, overflow="fold" if column == "last error" else "ellipsis")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.task_identifier,
            job.queue_name or "-",
            job.state,
            f"{job.attempts}/{job.max_attempts}",
            job.run_at.strftime("%Y-%m-%d %H:%M:%S"),
            (job.last_error or "")[:80],
        )
    console.print(table if jobs else "no jobs match")


@jobs_app.command("show")
def show(
    job_id: int,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """A job's fields, payload, result and error history."""
    job = with_client(database_url, schema, lambda c: c.get_job(job_id))
    if job is None:
        raise fail(f"no job {job_id} in schema {schema!r} (finished jobs go after retention)")
    for name in (
        "id",
        "task_identifier",
        "queue_name",
        "state",
        "priority",
        "run_at",
        "attempts",
        "max_attempts",
        "key",
        "revision",
        "flags",
        "locked_by",
        "created_at",
        "updated_at",
        "finished_at",
    ):
        console.print(f"[bold]{name}[/bold]: {getattr(job, name)}")
    console.print("[bold]payload[/bold]:", json.dumps(job.payload, indent=2))
    if job.result is not None:
        console.print("[bold]result[/bold]:", json.dumps(job.result, indent=2))
    for error in job.errors:
        attempt, at, message = error.get("attempt"), error.get("at"), error.get("message")
        console.print(f"[red]attempt {attempt}[/red] at {at}: {message}")
        if error.get("traceback"):
            console.print(error["traceback"], markup=False, highlight=False)


def _act(ids: list[int], verb: str, done: list[Any]) -> None:
    hit = {job.id if isinstance(job, Job) else job for job in done}
    for job_id in ids:
        if job_id in hit:
            console.print(f"job {job_id}: {verb}")
        else:
            err.print(f"job {job_id}: not {verb} (no such job, or it is running)")
    if len(hit) < len(ids):
        raise typer.Exit(1)


@jobs_app.command("retry")
def retry(ids: JobIds, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Run jobs now; permanently failed ones get one more attempt."""

    async def work(client: Client) -> list[Job]:
        return [job for i in ids if (job := await client.retry_job(i)) is not None]

    _act(ids, "ready to run", with_client(database_url, schema, work))


@jobs_app.command("cancel")
def cancel(ids: JobIds, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Cancel jobs (running ones are asked to stop)."""

    async def work(client: Client) -> list[Job]:
        return [job for i in ids if (job := await client.cancel_job(i)) is not None]

    _act(ids, "cancelled", with_client(database_url, schema, work))


@jobs_app.command("remove")
def remove(ids: JobIds, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Delete jobs that are not running, finished ones included."""
    deleted = with_client(database_url, schema, lambda c: c.delete_jobs(ids))
    _act(ids, "removed", deleted)


def cleanup(
    completed_retention: Annotated[
        str, typer.Option(help="Delete completed/cancelled jobs older than this.")
    ] = "1h",
    failed_retention: Annotated[
        str, typer.Option(help="Delete permanently failed jobs older than this.")
    ] = "7d",
    batch: Annotated[int, typer.Option(min=1, help="Rows deleted per transaction.")] = 1000,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Delete finished jobs past retention (in batches), and empty queues."""
    try:
        completed, failed = parse_duration(completed_retention), parse_duration(failed_retention)
    except ValueError as exc:
        raise fail(str(exc)) from exc

    options = MaintenanceOptions(
        completed_retention=completed, failed_retention=failed, cleanup_batch=batch
    )

    async def work(client: Client) -> tuple[int, int]:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            bar = progress.add_task("deleting")

            def show(finished: int, failed: int) -> None:
                progress.update(
                    bar, description=f"deleted {finished:,} finished, {failed:,} failed"
                )

            return await cleanup_jobs(client.pool, engine_sql(client.schema), options, show)

    finished, failed_count = with_client(database_url, schema, work)
    console.print(f"deleted {finished:,} finished and {failed_count:,} failed job(s)")
