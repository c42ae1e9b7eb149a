"""`kongflow env create`: an organization, project and environment, and its API key."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from kongflow.cli.common import DatabaseUrl, Schema, console, fail, with_client
from kongflow.jobs.environments import ENVIRONMENT_SLUGS, EnvironmentService
from kongflow.settings import DEFAULT_SCHEMA

app = typer.Typer(help="Runtime environments and their API keys.", no_args_is_help=True)


@app.command("create")
def create(
    org: Annotated[str, typer.Option(help="Organization slug (created if missing).")] = "default",
    project: Annotated[str, typer.Option(help="Project slug (created if missing).")] = "default",
    type_: Annotated[
        str, typer.Option("--type", help=f"One of {', '.join(ENVIRONMENT_SLUGS)}.")
    ] = "DEVELOPMENT",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Create the environment if it does not exist, and print its API key."""
    environment_type = type_.upper()
    if environment_type not in ENVIRONMENT_SLUGS:
        raise fail(f"--type must be one of {', '.join(ENVIRONMENT_SLUGS)}, got {type_!r}")
    try:
        environment = with_client(
            database_url,
            schema,
            lambda c: EnvironmentService(c).ensure(org, project, environment_type),
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(asdict(environment)))
        return
    console.print(
        f"{environment.organization_slug}/{environment.project_slug}/{environment.slug}"
        f" ({environment.type})"
    )
    console.print(f"API key: [bold]{environment.api_key}[/bold]")
