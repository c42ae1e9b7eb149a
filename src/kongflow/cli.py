"""The `kongflow` command."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from kongflow import embedded
from kongflow.queue.migrate import MigrationError, migrate
from kongflow.queue.worker import Worker
from kongflow.settings import DEFAULT_SCHEMA, validate_schema
from kongflow.workerqueue.catalog import TRIGGER_CATALOG
from kongflow.workerqueue.email import SmtpSettings, email_handler
from kongflow.workerqueue.task import TypedHandler

app = typer.Typer(help="kongflow: durable background jobs on PostgreSQL.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the embedded PostgreSQL (used when DATABASE_URL is unset).")
app.add_typer(db_app, name="db")
# Wide enough for tables when piped (rich assumes 80 columns off a terminal).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="DATABASE_URL", help="PostgreSQL URL; default: the embedded one."
    ),
]
Schema = Annotated[
    str,
    typer.Option("--schema", envvar="KONGFLOW_SCHEMA", help="Schema holding kongflow's tables."),
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _connect_url(database_url: str | None) -> str:
    return database_url or _start_embedded()


def _start_embedded() -> str:
    try:
        return embedded.start()
    except Exception as exc:
        raise _fail(
            f"could not start the embedded PostgreSQL in {embedded.pgdata_dir()}: {exc}\n"
            "its log is in that directory; set DATABASE_URL to use another server"
        ) from exc


async def _migrate(url: str, schema: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return len(await migrate(conn, schema))


def _run_migrations(database_url: str | None, schema: str) -> tuple[str, int]:
    try:
        schema = validate_schema(schema)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    url = _connect_url(database_url)
    try:
        return url, asyncio.run(_migrate(url, schema))
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach PostgreSQL at {url}: {exc}".strip()) from exc
    except MigrationError as exc:
        raise _fail(str(exc)) from exc


@app.command("migrate")
def migrate_command(database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Create or upgrade kongflow's schema (safe to run from several processes at once)."""
    _, applied = _run_migrations(database_url, schema)
    console.print(
        f"schema [bold]{schema}[/bold]: "
        + (f"applied {applied} migration(s)" if applied else "up to date")
    )


@app.command()
def dev(database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Get a ready database: start the embedded PostgreSQL if needed and migrate it."""
    url, applied = _run_migrations(database_url, schema)
    console.print(f"database: {url}")
    console.print(f"schema [bold]{schema}[/bold] ready ({applied} migration(s) applied)")
    console.print(
        "enqueue from Python with kongflow.Client, or from SQL with "
        f"[bold]select {schema}.add_job('task', '{{}}')[/bold]"
    )


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (initialising its data directory the first time)."""
    with console.status("starting the embedded PostgreSQL"):
        url = _start_embedded()
    console.print(f"running: {url}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    if embedded.stop():
        console.print("stopped")
    else:
        console.print("not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded PostgreSQL runs, where its data is, and its URL."""
    state = embedded.status()
    console.print(f"data directory: {state.data_dir}")
    if state.running:
        console.print(f"running (pid {state.pid}): {state.url}")
    else:
        console.print("not running (start it with `kongflow db start`)")


@db_app.command("url")
def db_url() -> None:
    """Print the embedded PostgreSQL's URL, starting it if needed; it keeps running."""
    typer.echo(_start_embedded())


def load_tasks(spec: str) -> Mapping[str, Any]:
    """`package.module[:attribute]` (default attribute `tasks`) -> {identifier: handler}."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "tasks"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: modules of the project at hand
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(f"cannot import {module_name!r} for --tasks: {exc}") from exc
    tasks = getattr(module, attribute, None)
    if not isinstance(tasks, Mapping):
        raise _fail(
            f"{module_name}:{attribute} must be a mapping of task identifiers to handlers, "
            f"got {type(tasks).__name__}"
        )
    return tasks


def _parse_limits(values: list[str]) -> dict[str, int]:
    limits = {}
    for value in values:
        name, _, limit = value.rpartition("=")
        if not name or not limit.isdigit() or int(limit) < 1:
            raise _fail(f"--queue-limit takes NAME=N with N >= 1 (e.g. 'runs:*=1'), got {value!r}")
        limits[name] = int(limit)
    return limits


@app.command()
def worker(
    tasks: Annotated[
        str, typer.Option(help="Handlers: package.module[:attribute], a mapping {task: handler}.")
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 10,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Serve only this queue (name or pattern); repeatable."),
    ] = None,
    queue_limit: Annotated[
        list[str] | None,
        typer.Option(help="Global limit for a queue, NAME=N (pattern allowed); repeatable."),
    ] = None,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls.")] = 1.0,
    poll_only: Annotated[
        bool, typer.Option(help="No LISTEN/NOTIFY (behind a transaction-mode pooler).")
    ] = False,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds without heartbeat before jobs are rescued.")
    ] = 30.0,
    shutdown_timeout: Annotated[
        float, typer.Option(help="Seconds running jobs get to finish on SIGTERM/SIGINT.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut down gracefully."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    handlers = load_tasks(tasks)
    try:
        the_worker = Worker(
            _connect_url(database_url),
            handlers,
            concurrency=concurrency,
            poll_interval=poll_interval,
            queues=queues or None,
            queue_limits=_parse_limits(queue_limit or []),
            schema=validate_schema(schema),
            poll_only=poll_only,
            lease=lease,
        )
    except (TypeError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    try:
        asyncio.run(_run_worker(the_worker, shutdown_timeout))
    except (psycopg.OperationalError, OSError) as exc:
        raise _fail(f"the worker could not reach PostgreSQL: {exc}") from exc


async def _run_worker(the_worker: Worker, shutdown_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    await the_worker.start()
    err.print(f"worker {the_worker.id} running {len(the_worker.tasks)} task(s); Ctrl-C stops it")
    on_signal = asyncio.ensure_future(signalled.wait())
    on_stop = asyncio.ensure_future(the_worker.wait_stopped())
    await asyncio.wait({on_signal, on_stop}, return_when=asyncio.FIRST_COMPLETED)
    if on_signal.done():
        err.print(f"stopping: running jobs get {shutdown_timeout:g}s to finish (again to force)")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: os._exit(130))
        await the_worker.stop(timeout=shutdown_timeout)
    on_signal.cancel()
    await on_stop
    if the_worker.failure is not None:
        raise _fail(f"the worker stopped after an internal error: {the_worker.failure!r}")


def catalog_handlers() -> dict[str, TypedHandler]:
    """The handlers this installation registers for trigger.dev's catalog."""
    handlers: dict[str, TypedHandler] = {}
    if os.environ.get("KONGFLOW_SMTP_URL"):
        handlers["scheduleEmail"] = email_handler(SmtpSettings.from_env())
    return handlers


@app.command()
def tasks(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List trigger.dev's task catalog: queue, priority, attempts, timeout, handler."""
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
        table.add_column(
            column, justify="right" if column in ("priority", "max attempts") else "left"
        )
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
