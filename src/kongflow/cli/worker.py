"""`kongflow worker`: run handlers from a module until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

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
from kongflow.engine.cron import CrontabError, parse_crontab, parse_duration
from kongflow.engine.maintenance import MaintenanceOptions
from kongflow.engine.rates import RateLimit
from kongflow.engine.worker import Worker
from kongflow.settings import DEFAULT_SCHEMA


def load_tasks(spec: str) -> Mapping[str, Any]:
    """`package.module[:attribute]` (default attribute `tasks`) -> {identifier: handler}."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "tasks"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: modules of the project at hand
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(f"cannot import {module_name!r} for --tasks: {exc}") from exc
    tasks = getattr(module, attribute, None)
    if not isinstance(tasks, Mapping):
        raise fail(
            f"{module_name}:{attribute} must be a mapping of task identifiers to handlers, "
            f"got {type(tasks).__name__}"
        )
    return tasks


def _parse_limits(values: list[str]) -> dict[str, int]:
    limits = {}
    for value in values:
        name, _, limit = value.rpartition("=")
        if not name or not limit.isdigit() or int(limit) < 1:
            raise fail(f"--queue-limit takes NAME=N with N >= 1 (e.g. 'runs:*=1'), got {value!r}")
        limits[name] = int(limit)
    return limits


def _parse_rates(values: list[str]) -> dict[str, RateLimit]:
    rates = {}
    for value in values:
        name, _, rate = value.rpartition("=")
        if not name or not rate:
            raise fail(f"--rate-limit takes NAME=RATE (e.g. 'emails=100/min'), got {value!r}")
        try:
            rates[name] = RateLimit.parse(rate)
        except ValueError as exc:
            raise fail(f"--rate-limit {value}: {exc}") from exc
    return rates


def _duration(value: str, option: str) -> Any:
    try:
        return parse_duration(value) if value != "0" else parse_duration("0s")
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from exc


# What every log record has; anything else was passed as `extra` (job_id, task, queue, ...).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601, UTC), level, logger, message, the record's own
    fields (a job's job_id, task, queue, attempt, max_attempts, error), and the exception if
    any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def worker(
    tasks: Annotated[
        str, typer.Option(help="Handlers: package.module[:attribute], a mapping {task: handler}.")
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 10,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Serve only this queue (name or pattern); repeatable."),
    ] = None,
    queue_limit: Annotated[
        list[str] | None,
        typer.Option(help="Global limit for a queue, NAME=N (pattern allowed); repeatable."),
    ] = None,
    rate_limit: Annotated[
        list[str] | None,
        typer.Option(help="Starts per window for a queue, NAME=100/min (pattern allowed)."),
    ] = None,
    crontab: Annotated[
        Path | None, typer.Option(help="A crontab file (graphile-worker's format).")
    ] = None,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls.")] = 1.0,
    poll_only: Annotated[
        bool, typer.Option(help="No LISTEN/NOTIFY (behind a transaction-mode pooler).")
    ] = False,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds without heartbeat before jobs are rescued.")
    ] = 30.0,
    shutdown_timeout: Annotated[
        float, typer.Option(help="Seconds running jobs get to finish on SIGTERM/SIGINT.")
    ] = 30.0,
    completed_retention: Annotated[
        str, typer.Option(help="Keep completed jobs this long (e.g. 1h; 0 = not at all).")
    ] = "1h",
    failed_retention: Annotated[
        str, typer.Option(help="Keep permanently failed jobs this long (e.g. 7d).")
    ] = "7d",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="The interface the metrics server binds (e.g. 127.0.0.1).")
    ] = "0.0.0.0",
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[str, typer.Option(help="text or json (one object per line).")] = "text",
    once: Annotated[
        bool, typer.Option(help="Run the jobs ready now, and those they make ready, then exit.")
    ] = False,
    migrate: Annotated[
        bool,
        typer.Option(help="Apply pending migrations at start (--no-migrate: a role without DDL)."),
    ] = True,
    database_url: DatabaseUrl = None,
    schema: Schema = DEFAULT_SCHEMA,
) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut down gracefully (or, with --once, until
    no job is ready)."""
    handlers = load_tasks(tasks)
    queue_limits, rate_limits = _parse_limits(queue_limit or []), _parse_rates(rate_limit or [])
    cron_items = []
    if crontab is not None:
        try:
            cron_items = parse_crontab(crontab.read_text())
        except OSError as exc:
            raise fail(f"cannot read --crontab {crontab}: {exc}") from exc
        except CrontabError as exc:
            raise fail(f"{crontab}: {exc}") from exc
    configure_logging(log_level, log_format)
    metrics = None
    if metrics_port is not None:
        from kongflow.engine.metrics import Metrics  # prometheus_client, only when asked for

        metrics = Metrics()
    url = connect_url(database_url)
    try:
        the_worker = Worker(
            url,
            handlers,
            concurrency=concurrency,
            poll_interval=poll_interval,
            queues=queues or None,
            queue_limits=queue_limits,
            rate_limits=rate_limits,
            schema=checked_schema(schema),
            poll_only=poll_only,
            lease=lease,
            crontab=cron_items,
            maintenance=MaintenanceOptions(
                completed_retention=_duration(completed_retention, "--completed-retention"),
                failed_retention=_duration(failed_retention, "--failed-retention"),
            ),
            metrics=metrics,
            migrate=migrate,
        )
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if metrics is not None and metrics_port is not None:
        try:
            metrics.serve(metrics_port, addr=metrics_host)
        except OSError as exc:
            raise fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from exc
    run_db(url, _run_worker(the_worker, shutdown_timeout, once=once))


async def _run_worker(the_worker: Worker, shutdown_timeout: float, *, once: bool) -> None:
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled.set)
    await the_worker.start()
    freeze_startup_heap()
    err.print(f"worker {the_worker.id} running {len(the_worker.tasks)} task(s); Ctrl-C stops it")
    on_signal = asyncio.ensure_future(signalled.wait())
    on_stop = asyncio.ensure_future(the_worker.wait_stopped())
    waits = {on_signal, on_stop}
    if once:
        waits.add(asyncio.ensure_future(_drain_then_stop(the_worker, shutdown_timeout)))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if on_signal.done():
        err.print(f"stopping: running jobs get {shutdown_timeout:g}s to finish (again to force)")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: os._exit(130))
        await the_worker.stop(timeout=shutdown_timeout)
    on_signal.cancel()
    await on_stop
    for wait in waits:
        wait.cancel()
    if the_worker.failure is not None:
        raise fail(f"the worker stopped after an internal error: {the_worker.failure!r}")


async def _drain_then_stop(the_worker: Worker, shutdown_timeout: float) -> None:
    await the_worker.drain()
    await the_worker.stop(timeout=shutdown_timeout)
