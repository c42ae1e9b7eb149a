"""The `kongflow` command."""

from __future__ import annotations

import asyncio
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from kongflow import embedded
from kongflow.queue.migrate import MigrationError, migrate
from kongflow.settings import DEFAULT_SCHEMA, validate_schema

app = typer.Typer(help="kongflow: durable background jobs on PostgreSQL.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the embedded PostgreSQL (used when DATABASE_URL is unset).")
app.add_typer(db_app, name="db")
console = Console(soft_wrap=True)
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
