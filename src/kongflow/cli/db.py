"""`kongflow db ...` and `kongflow migrate`."""

from __future__ import annotations

import psycopg
import typer

from kongflow import embedded
from kongflow.cli.common import (
    DatabaseUrl,
    Schema,
    checked_schema,
    connect_url,
    console,
    run_db,
    start_embedded,
)
from kongflow.engine.pool import connection_kwargs
from kongflow.service.schema import migrate_service
from kongflow.settings import DEFAULT_SCHEMA

app = typer.Typer(help="Manage the embedded PostgreSQL (used when DATABASE_URL is unset).")


async def _migrate(url: str, schema: str) -> int:
    # Prepared statements would outlive the command on a pooler's server connection.
    kwargs = connection_kwargs(prepared_statements=False)
    async with await psycopg.AsyncConnection.connect(url, **kwargs) as conn:
        return len(await migrate_service(conn, schema))


def run_migrations(database_url: str | None, schema: str) -> tuple[str, int]:
    schema = checked_schema(schema)
    url = connect_url(database_url)
    return url, run_db(url, _migrate(url, schema))


def migrate_command(database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Create or upgrade kongflow's schema, engine and jobs service (safe to run from several
    processes at once)."""
    _, applied = run_migrations(database_url, schema)
    console.print(
        f"schema [bold]{schema}[/bold]: "
        + (f"applied {applied} migration(s)" if applied else "up to date")
    )


@app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (initialising its data directory the first time)."""
    with console.status("starting the embedded PostgreSQL"):
        url = start_embedded()
    console.print(f"running: {url}")


@app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    console.print("stopped" if embedded.stop() else "not running")


@app.command("status")
def db_status() -> None:
    """Say whether the embedded PostgreSQL runs, where its data is, and its URL."""
    state = embedded.status()
    console.print(f"data directory: {state.data_dir}")
    if state.running:
        console.print(f"running (pid {state.pid}): {state.url}")
    else:
        console.print("not running (start it with `kongflow db start`)")


@app.command("url")
def db_url() -> None:
    """Print the embedded PostgreSQL's URL, starting it if needed; it keeps running."""
    typer.echo(start_embedded())
