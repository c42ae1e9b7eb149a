"""The `kongflow` command."""

from __future__ import annotations

from typing import Annotated

import typer

import kongflow
from kongflow.cli import admin, bench, dashboard, db, dev, env, serve, tasks, worker

app = typer.Typer(help="kongflow: durable background jobs on PostgreSQL.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kongflow {kongflow.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """kongflow: durable background jobs on PostgreSQL."""


app.add_typer(db.app, name="db")
app.add_typer(admin.queues_app, name="queues")
app.add_typer(admin.jobs_app, name="jobs")
app.add_typer(env.app, name="env")
app.command("migrate")(db.migrate_command)
app.command("worker")(worker.worker)
app.command("tasks")(tasks.tasks)
app.command("cleanup")(admin.cleanup)
app.command("dev")(dev.dev)
app.command("serve")(serve.serve)
app.command("dashboard")(dashboard.dashboard)
app.command("bench")(bench.bench_command)
