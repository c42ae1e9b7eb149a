"""`kongflow queues ...`, `kongflow jobs ...` and `kongflow cleanup`: inspect and act."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from kongflow.cli.common import DatabaseUrl, Schema, console, err, fail, with_client
from kongflow.engine.client import Client
from kongflow.engine.cron import parse_duration
from kongflow.engine.errors import InvalidJobError
from kongflow.engine.maintenance import MaintenanceOptions, cleanup_jobs
from kongflow.engine.models import Job
from kongflow.engine.sql import engine_sql
from kongflow.settings import DEFAULT_SCHEMA

queues_app = typer.Typer(help="Queues: jobs by state, limits, pause and resume.")
jobs_app = typer.Typer(help="List, show, retry, cancel and remove jobs.", no_args_is_help=True)

JobIds = Annotated[list[int], typer.Argument(help="Job ids.")]
STATES = ("available", "scheduled", "blocked", "running", "failed", "completed", "cancelled")


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
    """Per queue: jobs by state, age of the oldest ready job, limit, paused; and the tasks
    with ready jobs that no live worker takes."""
    if ctx.invoked_subcommand is not None:
        return

    async def work(client: Client) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await client.queue_stats(), await client.unhandled_tasks()

    stats, unhandled = with_client(database_url, schema, work)
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
    if unhandled:
        waiting = Table(
            title="ready jobs that no live worker takes (no handler, or no worker on the queue)"
        )
        for column in ("task", "ready", "oldest", "queues"):
            waiting.add_column(column, justify="right" if column in ("ready", "oldest") else "left")
        for row in unhandled:
            names = [name or "(no queue)" for name in row["queue_names"]]
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            waiting.add_row(
                row["task_identifier"],
                str(row["ready"]),
                _age(row["oldest_run_at"]),
                ", ".join(names[:3]) + more,
            )
        console.print(waiting)


def _pause_or_resume(name: str, database_url: str | None, schema: str, *, pause: bool) -> None:
    async def work(client: Client) -> bool:
        # Checked and done in one transaction: the queue cannot be collected in between.
        async with client.pool.connection() as conn, conn.transaction():
            if not await client.queue_known(name, conn=conn):
                return False
            if pause:
                await client.pause_queue(name, conn=conn)
            else:
                await client.resume_queue(name, conn=conn)
            return True

    try:
        known = with_client(database_url, schema, work)
    except InvalidJobError as exc:
        raise fail(str(exc)) from exc
    if not known:
        raise fail(
            f"no queue {name!r} in schema {schema!r}: it has no jobs, no limit matches it, and"
            " it was never paused (check the name with `kongflow queues`)"
        )
    console.print(f"queue {name!r} {'paused' if pause else 'resumed'}")


@queues_app.command("pause")
def pause(name: str, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Hold a queue for every worker (running jobs finish)."""
    _pause_or_resume(name, database_url, schema, pause=True)


@queues_app.command("resume")
def resume(name: str, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Let workers take jobs from a paused queue again."""
    _pause_or_resume(name, database_url, schema, pause=False)


@queues_app.command("rate-limit")
def rate_limit(
    pattern: Annotated[str, typer.Argument(help="A queue name, or a pattern such as api:*.")],
    rate: Annotated[str, typer.Argument(help="100/min, 10/s, 5/30s...; none removes it.")],
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Limit how many jobs of a queue start in any window, across every worker (a pattern's
    limit holds for each queue it matches)."""
    limit = None if rate.lower() == "none" else rate
    try:
        with_client(database_url, schema, lambda c: c.set_rate_limits({pattern: limit}))
    except InvalidJobError as exc:
        raise fail(str(exc)) from exc
    console.print(f"{pattern!r}: {'no rate limit' if limit is None else f'at most {rate}'}")


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


FINISHED = ("completed", "cancelled")


def _report(outcomes: list[tuple[int, str, bool]]) -> None:
    """One line per job: what happened to it; exit code 1 if anything was not done."""
    for job_id, what, done in outcomes:
        (console if done else err).print(f"job {job_id}: {what}")
    if not all(done for _, _, done in outcomes):
        raise typer.Exit(1)


@jobs_app.command("retry")
def retry(ids: JobIds, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Run jobs now; permanently failed ones get one more attempt. Running and finished jobs
    are left alone."""

    async def work(client: Client) -> list[tuple[int, str, bool]]:
        outcomes = []
        for job_id in ids:
            if await client.retry_job(job_id) is not None:
                outcomes.append((job_id, "retried: ready to run", True))
                continue
            job = await client.get_job(job_id)
            if job is None:
                outcomes.append((job_id, "not retried: no such job", False))
            elif job.state == "running":
                outcomes.append((job_id, "not retried: it is running", False))
            else:
                outcomes.append((job_id, f"not retried: already finished ({job.state})", False))
        return outcomes

    _report(with_client(database_url, schema, work))


@jobs_app.command("cancel")
def cancel(ids: JobIds, database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Cancel jobs: at once if they are not running; a running one is asked to stop (its
    worker cancels it) and is not retried."""

    async def work(client: Client) -> list[tuple[int, str, bool]]:
        outcomes = []
        for job_id in ids:
            before = await client.get_job(job_id)
            if before is None:
                outcomes.append((job_id, "not cancelled: no such job", False))
            elif before.state in FINISHED:
                outcomes.append(
                    (job_id, f"not cancelled: already finished ({before.state})", False)
                )
            else:
                job = await client.cancel_job(job_id)
                if job is None:  # deleted meanwhile
                    outcomes.append((job_id, "not cancelled: no such job", False))
                elif job.state == "running":
                    outcomes.append((job_id, "running: cancel requested", True))
                elif job.state == "cancelled":
                    outcomes.append((job_id, "cancelled", True))
                else:  # it finished meanwhile
                    outcomes.append(
                        (job_id, f"not cancelled: already finished ({job.state})", False)
                    )
        return outcomes

    _report(with_client(database_url, schema, work))


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
