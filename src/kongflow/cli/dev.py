"""`kongflow dev`: the whole system on one machine. The database (embedded unless
DATABASE_URL), migrated; the API; a worker running the jobs service; and an example endpoint
with three jobs (one waits between its tasks, calling the API back), registered in a default
development environment."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from kongflow.cli.common import (
    DatabaseUrl,
    Schema,
    checked_schema,
    connect_url,
    console,
    fail,
    require_extra,
    run_db,
)
from kongflow.cli.serve import listen_api, stop_signals
from kongflow.settings import DEFAULT_SCHEMA, mask_url

if TYPE_CHECKING:  # the service, API and SDK load only when `dev` runs, not for every command
    from kongflow.api import BackgroundServer
    from kongflow.service.environments import Environment
    from kongflow.service.rows import Json, RunStatus
    from kongflow.service.service import JobsService


def dev(
    port: Annotated[int, typer.Option(help="Port of the HTTP API.")] = 8030,
    host: Annotated[str, typer.Option(help="Interface the API listens on.")] = "127.0.0.1",
    demo: Annotated[
        bool, typer.Option(help="Test an example job and show its run reach SUCCESS.")
    ] = False,
    concurrency: Annotated[int, typer.Option(help="Jobs the worker runs at once.")] = 10,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Run kongflow locally: database, API, worker and an example endpoint. Ctrl-C stops all."""
    require_extra("service", "kongflow dev")
    schema = checked_schema(schema)
    url = connect_url(database_url)
    run_db(url, _serve(url, schema, host, port, demo, concurrency))


async def _serve(url: str, schema: str, host: str, port: int, demo: bool, concurrency: int) -> None:
    from kongflow.api import BackgroundServer
    from kongflow.dashboard import DashboardOptions
    from kongflow.sdk.example import example_endpoint
    from kongflow.service.network import NetworkPolicy
    from kongflow.service.service import JobsOptions, JobsService

    stop = stop_signals()
    # Development: endpoints run on this machine or its private network.
    options = JobsOptions(network=NetworkPolicy.dev())
    jobs = JobsService(url, schema=schema, concurrency=concurrency, options=options)
    try:
        with console.status("migrating and starting the worker"):
            await jobs.start()
        env = await jobs.environments.ensure()
        # Open on loopback; beyond it, environments' API keys log in.
        board = DashboardOptions(login=not is_loopback(host))
        api_server = await listen_api(jobs, host, port, board)
        # The example's io calls (its tasks, its wait) go to this API.
        endpoint = example_endpoint(env.api_key, api_url=_reachable_url(api_server))
        async with BackgroundServer(endpoint.app) as endpoint_server, api_server:
            await jobs.endpoints.create_endpoint(env, endpoint.id, endpoint_server.url)
            _welcome(url, env, api_server.url, endpoint_server.url, endpoint.id)
            if demo:
                demo_run = asyncio.ensure_future(_demo(jobs, env))
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait({demo_run, stopped}, return_when=asyncio.FIRST_COMPLETED)
                demo_run.cancel()
                stopped.cancel()
                if demo_run.done() and not demo_run.cancelled():
                    demo_run.result()  # its error, if it failed
            if not stop.is_set():
                console.print("[dim]Ctrl-C stops everything[/dim]")
            await stop.wait()
            console.print("stopping: the worker lets running jobs finish")
    finally:
        await jobs.close(timeout=10)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reachable_url(server: BackgroundServer) -> str:
    """The server's URL as a client on this machine reaches it (a wildcard address, which
    the server listens on, is not one to connect to)."""
    if server.host in ("0.0.0.0", ""):
        return f"http://127.0.0.1:{server.port}"
    if server.host == "::":
        return f"http://[::1]:{server.port}"
    return server.url


def _welcome(db_url: str, env: Environment, api: str, endpoint_url: str, slug: str) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("database", mask_url(db_url))
    table.add_row("API", f"{api}  (OpenAPI: {api}/docs)")
    table.add_row("dashboard", f"{api}/dashboard")
    table.add_row("environment", f"{env.organization_slug}/{env.project_slug}/{env.slug}")
    table.add_row("API key", f"[bold]{env.api_key}[/bold]")
    table.add_row(
        "example endpoint",
        f"{slug} at {endpoint_url} (jobs hello-world, count-words, wait-and-greet)",
    )
    table.add_row("outbound calls", "development: loopback and private networks allowed")
    console.print(table)
    console.print(
        "try: [bold]curl -X POST -H 'Authorization: Bearer "
        f"{env.api_key}' -H 'content-type: application/json' "
        f'-d \'{{"payload": {{"name": "you"}}}}\' {api}/api/v1/jobs/hello-world/test[/bold]'
    )


#: What the demo tests: a job that answers at once, then one that waits between its tasks.
DEMO_JOBS: tuple[tuple[str, Json], ...] = (
    ("hello-world", {"name": "kongflow"}),
    ("wait-and-greet", {"name": "kongflow", "seconds": 1}),
)
#: How long the demo follows a run.
DEMO_RUN_LIMIT = 30.0


async def _demo(jobs: JobsService, env: Environment) -> None:
    """Test each demo job once indexing has registered it, and follow its run to its end."""
    for job_id, payload in DEMO_JOBS:
        await _demo_job(jobs, env, job_id, payload)


async def _demo_job(jobs: JobsService, env: Environment, job_id: str, payload: Json) -> None:
    from kongflow.service.runs import TERMINAL, JobNotFoundError

    for _ in range(100):
        try:
            queued = await jobs.runs.test_job(env, job_id, payload)
            break
        except JobNotFoundError:
            await asyncio.sleep(0.1)  # the endpoint is being indexed
    else:
        raise fail("the example endpoint was not indexed within 10 s: is the worker running?")
    console.print(f"demo: tested {job_id}, run {queued.run_id}")
    deadline = time.monotonic() + DEMO_RUN_LIMIT
    with Live(console=console, transient=False) as live:
        while True:
            run = await jobs.runs.get_run(env, queued.run_id)
            assert run is not None
            live.update(_statuses_table(run.statuses))
            if run.status in TERMINAL or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    if run.status not in TERMINAL:
        console.print(f"\ndemo: run still [bold]{run.status}[/bold] after {DEMO_RUN_LIMIT:g} s")
        return
    console.print(f"\ndemo: run ended [bold]{run.status}[/bold] with output {run.output}")


def _statuses_table(statuses: Sequence[RunStatus]) -> Table:
    table = Table("status", "at")
    for status in statuses:
        table.add_row(status.status, status.at.strftime("%H:%M:%S.%f")[:-3])
    return table
