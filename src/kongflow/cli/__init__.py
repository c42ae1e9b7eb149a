"""The `kongflow` command."""

from __future__ import annotations

import typer

from kongflow.cli import admin, db, env, tasks, worker
from kongflow.cli.common import DatabaseUrl, Schema, console
from kongflow.settings import DEFAULT_SCHEMA

app = typer.Typer(help="kongflow: durable background jobs on PostgreSQL.", no_args_is_help=True)
app.add_typer(db.app, name="db")
app.add_typer(admin.queues_app, name="queues")
app.add_typer(admin.jobs_app, name="jobs")
app.add_typer(env.app, name="env")
app.command("migrate")(db.migrate_command)
app.command("worker")(worker.worker)
app.command("tasks")(tasks.tasks)
app.command("cleanup")(admin.cleanup)


@app.command()
def dev(database_url: DatabaseUrl = None, schema: Schema = DEFAULT_SCHEMA) -> None:
    """Get a ready database: start the embedded PostgreSQL if needed and migrate it."""
    url, applied = db.run_migrations(database_url, schema)
    console.print(f"database: {url}")
    console.print(f"schema [bold]{schema}[/bold] ready ({applied} migration(s) applied)")
    console.print(
        "enqueue from Python with kongflow.Client, or from SQL with "
        f"[bold]select {schema}.add_job('task', '{{}}')[/bold]"
    )
