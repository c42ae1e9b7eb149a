"""The `kongflow` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import kongflow
from kongflow.cli import admin, bench, config, dashboard, db, dev, env, serve, tasks, worker
from kongflow.cli.common import console, fail
from kongflow.settings import mask_url

app = typer.Typer(
    help="kongflow: durable background jobs on PostgreSQL.",
    no_args_is_help=True,
    context_settings={"auto_envvar_prefix": config.ENV_PREFIX},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kongflow {kongflow.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """kongflow: durable background jobs on PostgreSQL. Options come from the command line,
    else KONGFLOW_<COMMAND>_<OPTION> variables, else kongflow.toml or [tool.kongflow] in
    pyproject.toml (see `kongflow config`)."""
    try:
        found = config.find_config(Path.cwd())
        if found is not None:
            ctx.default_map = config.default_map(ctx.command, found)
    except config.ConfigError as exc:
        raise fail(str(exc)) from exc


@app.command("config")
def show_config(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(help="The command, e.g. worker or jobs list.")],
) -> None:
    """Show a command's options as it would run here, and where each comes from."""
    assert ctx.parent is not None
    try:
        rows = config.resolved(ctx.parent, command)
    except config.ConfigError as exc:
        raise fail(str(exc)) from exc
    table = Table("option", "value", "from", box=None)
    for name, value, source in rows:
        table.add_row(name, _shown(name, value), source)
    console.print(table)


def _shown(name: str, value: object) -> str:
    if value is None:
        return ""
    if any(word in name for word in config.SECRET_WORDS):
        return "***"
    if name == "--database-url":
        return mask_url(str(value))
    return str(value)


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
