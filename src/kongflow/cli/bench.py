"""`kongflow bench`: the engine's benchmarks (kongflow.engine.benchmark) with progress bars,
a table, and JSON for keeping or comparing runs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from kongflow.cli.common import DatabaseUrl, connect_url, console, run_db
from kongflow.engine import benchmark as bench

Measure = Callable[[bench.Progress], Awaitable[bench.Figure]]


class Shape(StrEnum):
    enqueue = "enqueue"
    burn_down = "burn-down"
    steady = "steady"
    idle = "idle"


def bench_command(
    shape: Annotated[
        list[Shape] | None, typer.Option(help="Shapes to run (repeatable); default: all.")
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Burn-down: jobs to work off.")] = 50_000,
    processes: Annotated[
        list[int] | None, typer.Option(help="Burn-down: worker processes (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Burn-down: slots a worker.")] = 1000,
    rate: Annotated[
        list[float] | None, typer.Option(help="Steady: jobs/s to enqueue at (repeatable).")
    ] = None,
    seconds: Annotated[float, typer.Option(min=1, help="Steady and idle: how long.")] = 10,
    single: Annotated[int, typer.Option(min=1, help="Enqueue: jobs, 1 per transaction.")] = 5000,
    clients: Annotated[int, typer.Option(min=2, help="Enqueue: concurrent clients.")] = 8,
    bulk: Annotated[int, typer.Option(min=1, help="Enqueue: jobs for the bulk run.")] = 50_000,
    chunk: Annotated[int, typer.Option(min=1, help="Enqueue: jobs per bulk call.")] = 1000,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Measure enqueue, burn-down, steady-state latency and an idle worker on this database
    (throwaway schemas; durable settings as configured on the server)."""
    url = connect_url(database_url)
    shapes = shape or list(Shape)
    plan: list[tuple[str, Measure]] = []
    if Shape.enqueue in shapes:
        plan += [
            ("enqueue floor, 1 client", lambda p: bench.enqueue_floor(url, single, p)),
            ("enqueue, 1 client", lambda p: bench.enqueue_single(url, single, 1, p)),
            ("enqueue pipelined, 1 client", lambda p: bench.enqueue_pipelined(url, single, p)),
            (
                f"enqueue, {clients} clients",
                lambda p: bench.enqueue_single(url, single, clients, p),
            ),
            ("enqueue, bulk", lambda p: bench.enqueue_bulk(url, bulk, chunk, p)),
        ]
    if Shape.burn_down in shapes:
        for count in processes or [1, 2]:
            plan.append(
                (f"burn-down, {count} process(es)", _burn_down(url, jobs, count, concurrency))
            )
    if Shape.steady in shapes:
        for per_second in rate or [50.0, 500.0]:
            plan.append((f"steady at {per_second:g} jobs/s", _steady(url, per_second, seconds)))
    if Shape.idle in shapes:
        plan.append(("idle worker", lambda p: bench.idle_worker(url, seconds, p)))
    figures = run_db(url, _run(plan))
    console.print(_table(figures))
    if json_path is not None:
        json_path.write_text(
            json.dumps({"cores": os.cpu_count(), "figures": [asdict(f) for f in figures]}, indent=1)
        )
        console.print(f"figures written to {json_path}")


def _burn_down(url: str, jobs: int, processes: int, concurrency: int) -> Measure:
    return lambda progress: bench.burn_down(url, jobs, processes, concurrency, progress)


def _steady(url: str, rate: float, seconds: float) -> Measure:
    return lambda progress: bench.steady(url, rate, seconds, 10, progress)


async def _run(plan: list[tuple[str, Measure]]) -> list[bench.Figure]:
    figures = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for description, measure in plan:
            task = progress.add_task(description, total=None)

            def report(done: int, total: int, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            figures.append(await measure(report))
            await asyncio.sleep(0)  # let the bar draw its end
    return figures


def _table(figures: list[bench.Figure]) -> Table:
    table = Table(title=f"kongflow bench ({os.cpu_count()} cores)")
    table.add_column("shape")
    table.add_column("setting")
    table.add_column("figure", justify="right")
    for figure in figures:
        value = f"{figure.value:,.0f} {figure.unit}"
        if figure.shape == "steady" and figure.detail:
            d = figure.detail
            value = f"p50 {d['p50']:.1f} / p95 {d['p95']:.1f} / p99 {d['p99']:.1f} ms"
        elif figure.shape == "idle worker" and figure.detail:
            value = f"{figure.value:.0f} MB RSS, {figure.detail['cpu_percent']:.2f}% of a core"
        table.add_row(figure.shape, figure.setting, value)
    return table
