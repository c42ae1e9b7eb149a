"""`kongflow dashboard`: the dashboard on its own, over a database kongflow's engine uses (the
jobs service's pages appear when its tables are there too)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kongflow.cli.common import (
    DatabaseUrl,
    Schema,
    checked_schema,
    connect_url,
    err,
    fail,
    require_extra,
    run_db,
)
from kongflow.cli.dev import is_loopback
from kongflow.cli.serve import DashboardToken, dashboard_options, stop_signals
from kongflow.settings import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from kongflow.dashboard import DashboardOptions


def dashboard(
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8040,
    host: Annotated[str, typer.Option(help="Interface it listens on.")] = "127.0.0.1",
    token: DashboardToken = None,
    read_only: Annotated[bool, typer.Option(help="Show, and take no action.")] = False,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Serve the dashboard on its own: open on loopback, behind a login with --token (which
    it needs to listen anywhere else)."""
    require_extra("service", "kongflow dashboard")
    if token is None and not is_loopback(host):
        raise fail(f"to serve the dashboard on {host}, set --token (or KONGFLOW_DASHBOARD_TOKEN)")
    options = dashboard_options(token, login=token is not None, read_only=read_only)
    url = connect_url(database_url)
    run_db(url, _serve(url, checked_schema(schema), host, port, options))


async def _serve(url: str, schema: str, host: str, port: int, options: DashboardOptions) -> None:
    from kongflow.api import BackgroundServer
    from kongflow.dashboard import create_dashboard
    from kongflow.engine.client import Client
    from kongflow.service.service import JobsService

    stop = stop_signals()
    async with Client(url, schema=schema) as client:
        async with client.pool.connection() as conn:
            cur = await conn.execute(
                "select to_regclass(%s) is not null, to_regclass(%s) is not null",
                (f'"{schema}"._jobs', f'"{schema}".job_runs'),
            )
            engine, service = await cur.fetchone() or (False, False)
        if not engine:
            raise fail(f"schema {schema!r} has no kongflow tables: run `kongflow migrate` first")
        jobs = await JobsService(client=client).open() if service else None
        app = create_dashboard(client, jobs, options)
        try:
            server = BackgroundServer(app, host, port)
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc
        async with server:
            pages = "engine and jobs service" if service else "engine"
            login = "login required" if options.login else "open (loopback)"
            err.print(f"dashboard on {server.url} ({pages}; {login}); Ctrl-C stops it")
            await stop.wait()
        if jobs is not None:
            await jobs.close()
