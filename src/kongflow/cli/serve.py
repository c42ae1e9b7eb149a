"""`kongflow serve`: the jobs service for deployment. The API and the service's worker in one
process, or apart (`--no-worker` for API processes, `--no-api` for worker processes), against
DATABASE_URL; Ctrl-C or SIGTERM stops it gracefully."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from kongflow.cli.common import (
    DatabaseUrl,
    Schema,
    checked_schema,
    connect_url,
    err,
    fail,
    freeze_startup_heap,
    run_db,
)
from kongflow.settings import DEFAULT_SCHEMA

if TYPE_CHECKING:  # the service and API load only when a command runs them
    from kongflow.api import BackgroundServer
    from kongflow.service.network import NetworkPolicy
    from kongflow.service.service import JobsService

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
    allow_network: AllowNetwork = None,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Run the jobs service: the HTTP API and its worker (either can be turned off, to scale
    them apart). Endpoints and callbacks are called on public addresses only, unless
    --allow-network opens more."""
    if not api and not worker:
        raise fail("--no-api and --no-worker together leave nothing to run")
    schema = checked_schema(schema)
    network = network_policy(allow_network or [])
    url = connect_url(database_url)
    run_db(url, _serve(url, schema, host, port, api, worker, concurrency, lease, network))


def network_policy(allow_networks: list[str]) -> NetworkPolicy:
    """The strict policy opened to `allow_networks`; a clear error for one that is not a
    network."""
    from kongflow.service.network import NetworkPolicy

    try:
        return NetworkPolicy.strict(allow_networks)
    except ValueError as exc:
        raise fail(f"--allow-network / KONGFLOW_ALLOW_NETWORKS: {exc}") from exc


async def _serve(
    url: str,
    schema: str,
    host: str,
    port: int,
    api: bool,
    worker: bool,
    concurrency: int,
    lease: float,
    network: NetworkPolicy,
) -> None:
    from kongflow.service.service import JobsOptions, JobsService

    stop = stop_signals()
    options = JobsOptions(network=network)
    jobs = JobsService(url, schema=schema, concurrency=concurrency, lease=lease, options=options)
    try:
        await (jobs.start() if worker else jobs.open())
        server = await listen_api(jobs, host, port) if api else None
        freeze_startup_heap()
        parts = [f"API on {server.url}" if server else "", "worker" if worker else ""]
        err.print(f"kongflow serving: {', '.join(p for p in parts if p)}; Ctrl-C stops it")
        err.print(f"outbound calls to endpoints and callbacks: {network.describe()}")
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


async def listen_api(jobs: JobsService, host: str, port: int) -> BackgroundServer:
    """The API, listening; a taken port is a clear error."""
    from kongflow.api import BackgroundServer, create_app

    try:
        server = BackgroundServer(create_app(jobs), host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port} ({exc}); choose another --port") from exc
    return await server.start()
