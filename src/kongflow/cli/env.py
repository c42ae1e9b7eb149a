"""`kongflow env create | rotate-key | revoke`: environments and their API keys."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated

import typer

from kongflow.cli.common import DatabaseUrl, Schema, console, fail, with_client
from kongflow.engine.client import Client
from kongflow.service.environments import (
    ENVIRONMENT_SLUGS,
    Environment,
    EnvironmentService,
    RotatedKey,
)
from kongflow.settings import DEFAULT_SCHEMA

app = typer.Typer(help="Runtime environments and their API keys.", no_args_is_help=True)

Org = Annotated[str, typer.Option(help="Organization slug.")]
Project = Annotated[str, typer.Option(help="Project slug.")]
EnvType = Annotated[str, typer.Option("--type", help=f"One of {', '.join(ENVIRONMENT_SLUGS)}.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `7d` as seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"expected a duration such as 90s, 15m, 2h or 7d, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _checked_type(type_: str) -> str:
    environment_type = type_.upper()
    if environment_type not in ENVIRONMENT_SLUGS:
        raise fail(f"--type must be one of {', '.join(ENVIRONMENT_SLUGS)}, got {type_!r}")
    return environment_type


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
    environment_type = _checked_type(type_)
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


@app.command("rotate-key")
def rotate_key(
    grace: Annotated[
        str,
        typer.Option(help="How long the old key keeps working (90s, 15m, 2h, 7d; 0: not at all)."),
    ] = "1h",
    org: Org = "default",
    project: Project = "default",
    type_: EnvType = "DEVELOPMENT",
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Issue a new API key; the old one stops working once the grace period is over."""
    seconds = parse_duration(grace)
    _replace_key(
        org,
        project,
        type_,
        as_json,
        database_url,
        schema,
        lambda service, env: service.rotate_key(env, seconds),
    )


@app.command("revoke")
def revoke(
    org: Org = "default",
    project: Project = "default",
    type_: EnvType = "DEVELOPMENT",
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Stop the environment's key (and any rotated one) at once, and issue a new one."""
    _replace_key(
        org,
        project,
        type_,
        as_json,
        database_url,
        schema,
        lambda service, env: service.revoke(env),
    )


def _replace_key(
    org: str,
    project: str,
    type_: str,
    as_json: bool,
    database_url: str | None,
    schema: str,
    change: Callable[[EnvironmentService, Environment], Awaitable[RotatedKey]],
) -> None:
    environment_type = _checked_type(type_)

    async def work(client: Client) -> RotatedKey | None:
        service = EnvironmentService(client)
        environment = await service.find(org, project, environment_type)
        return None if environment is None else await change(service, environment)

    try:
        rotated = with_client(database_url, schema, work)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if rotated is None:
        raise fail(
            f"no {environment_type} environment in {org}/{project}: "
            "create it with `kongflow env create`"
        )
    expires = rotated.old_key_expires_at
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "apiKey": rotated.environment.api_key,
                    "oldKeyExpiresAt": expires.isoformat() if expires else None,
                }
            )
        )
        return
    console.print(f"new API key: [bold]{rotated.environment.api_key}[/bold]")
    if expires is None:
        console.print("the old key no longer works")
    else:
        console.print(f"the old key works until {expires.isoformat(timespec='seconds')}")
    console.print("endpoints must be given the new key: kongflow calls them with it from now on")
