"""`kongflow serve`: the jobs service for deployment. The API and the service's worker in one
process, or apart (`--no-worker` for API processes, `--no-api` for worker processes), against
DATABASE_URL; Ctrl-C or SIGTERM stops it gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kongflow.cli.common import (
    DatabaseUrl,
    Schema,
    checked_schema,
    connect_url,
    err,
    fail,
    freeze_startup_heap,
    require_extra,
    run_db,
)
from kongflow.settings import DEFAULT_SCHEMA, mask_url

if TYPE_CHECKING:  # the service and API load only when a command runs them
    from kongflow.api import BackgroundServer
    from kongflow.dashboard import DashboardOptions
    from kongflow.service.network import NetworkPolicy
    from kongflow.service.service import JobsOptions, JobsService

AllowNetwork = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-network",
        envvar="KONGFLOW_ALLOW_NETWORKS",
        metavar="CIDR",
        help="A network endpoints and callbacks may be in, beyond public addresses (e.g. "
        "10.0.0.0/8 for endpoints on a private network); repeatable, or comma-separated in "
        "the environment variable.",
        show_default=False,
    ),
]


def serve(
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8030,
    host: Annotated[str, typer.Option(help="Interface the API listens on.")] = "127.0.0.1",
    api: Annotated[bool, typer.Option(help="Serve the HTTP API.")] = True,
    worker: Annotated[bool, typer.Option(help="Run the jobs service's tasks.")] = True,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs the worker runs at once.")] = 10,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds without heartbeat before jobs are rescued.")
    ] = 30.0,
    poll_only: Annotated[
        bool,
        typer.Option(help="Behind a transaction-mode pooler: no LISTEN, no prepared statements."),
    ] = False,
    allow_network: AllowNetwork = None,
    dashboard: Annotated[bool, typer.Option(help="Serve the dashboard at /dashboard.")] = True,
    dashboard_token: DashboardToken = None,
    dashboard_read_only: Annotated[
        bool, typer.Option(help="The dashboard shows, and takes no action.")
    ] = False,
    smtp_url: Annotated[
        str | None,
        typer.Option(
            envvar="KONGFLOW_SMTP_URL",
            help="Deliver scheduleEmail through smtp://user:pass@host:587?from=...&starttls=1.",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Run the jobs service: the HTTP API and its worker (either can be turned off, to scale
    them apart), and the dashboard at /dashboard behind a login (the admin token, or an
    environment's API key for its runs). Endpoints and callbacks are called on public
    addresses only, unless --allow-network opens more."""
    require_extra("service", "kongflow serve")
    if not api and not worker:
        raise fail("--no-api and --no-worker together leave nothing to run")
    schema = checked_schema(schema)
    options = jobs_options(network_policy(allow_network or []), smtp_url)
    board = (
        dashboard_options(dashboard_token, login=True, read_only=dashboard_read_only)
        if dashboard
        else None
    )
    url = connect_url(database_url)
    worker_options = {"concurrency": concurrency, "lease": lease, "poll_only": poll_only}
    run_db(url, _serve(url, schema, host, port, api, worker, worker_options, options, board))


DashboardToken = Annotated[
    str | None,
    typer.Option(
        envvar="KONGFLOW_DASHBOARD_TOKEN",
        help="The dashboard's admin token (16 characters or more); without one, only "
        "environments' API keys log in. Sessions are signed with KONGFLOW_DASHBOARD_SECRET "
        "(random per process if unset).",
        show_default=False,
    ),
]


def dashboard_options(token: str | None, *, login: bool, read_only: bool) -> DashboardOptions:
    from kongflow.dashboard import DashboardOptions

    try:
        return DashboardOptions(
            login=login,
            admin_token=token or None,
            read_only=read_only,
            secret=os.environ.get("KONGFLOW_DASHBOARD_SECRET") or None,
        )
    except ValueError as exc:
        raise fail(f"--dashboard-token / KONGFLOW_DASHBOARD_TOKEN: {exc}") from exc


def network_policy(allow_networks: list[str]) -> NetworkPolicy:
    """The strict policy opened to `allow_networks`; a clear error for one that is not a
    network."""
    from kongflow.service.network import NetworkPolicy

    try:
        return NetworkPolicy.strict(allow_networks)
    except ValueError as exc:
        raise fail(f"--allow-network / KONGFLOW_ALLOW_NETWORKS: {exc}") from exc


def jobs_options(network: NetworkPolicy, smtp_url: str | None) -> JobsOptions:
    """The service's options from the command line; a bad SMTP URL is a clear error."""
    from kongflow.service.email import SmtpSettings
    from kongflow.service.service import JobsOptions

    try:
        smtp = SmtpSettings.from_url(smtp_url) if smtp_url else None
    except ValueError as exc:
        raise fail(str(exc).replace(smtp_url or "", mask_url(smtp_url or ""))) from exc
    return JobsOptions(network=network, smtp=smtp)


async def _serve(
    url: str,
    schema: str,
    host: str,
    port: int,
    api: bool,
    worker: bool,
    worker_options: dict[str, Any],
    options: JobsOptions,
    dashboard: DashboardOptions | None,
) -> None:
    from kongflow.service.service import JobsService

    stop = stop_signals()
    jobs = JobsService(url, schema=schema, options=options, **worker_options)
    try:
        await (jobs.start() if worker else jobs.open())
        server = await listen_api(jobs, host, port, dashboard) if api else None
        freeze_startup_heap()
        parts = [f"API on {server.url}" if server else "", "worker" if worker else ""]
        if server is not None and dashboard is not None:
            parts.insert(1, f"dashboard on {server.url}/dashboard")
        err.print(f"kongflow serving: {', '.join(p for p in parts if p)}; Ctrl-C stops it")
        err.print(f"outbound calls to endpoints and callbacks: {options.network.describe()}")
        await stop.wait()
        err.print("stopping: running jobs get time to finish")
        if server is not None:
            await server.stop()
    finally:
        await jobs.close(timeout=10)


def stop_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def listen_api(
    jobs: JobsService, host: str, port: int, dashboard: DashboardOptions | None = None
) -> BackgroundServer:
    """The API (and the dashboard at /dashboard, if given), listening; a taken port is a clear
    error."""
    from kongflow.api import BackgroundServer, create_app

    try:
        server = BackgroundServer(create_app(jobs, dashboard), host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc
    return await server.start()
