"""What every command shares: the consoles, the database options, errors that tell what to do."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from psycopg_pool import PoolTimeout
from rich.console import Console
from rich.markup import escape

from kongflow import embedded
from kongflow.engine.client import Client
from kongflow.engine.migrate import MigrationError
from kongflow.extras import MissingExtra, require
from kongflow.service.schema import ALL_COMPONENTS
from kongflow.settings import mask_url, validate_schema

T = TypeVar("T")

# Wide enough for tables when piped (rich assumes 80 columns off a terminal).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="DATABASE_URL", help="PostgreSQL URL; default: the embedded one."
    ),
]
Schema = Annotated[
    str,
    typer.Option("--schema", envvar="KONGFLOW_SCHEMA", help="Schema holding kongflow's tables."),
]


def freeze_startup_heap() -> None:
    """Once a long-running command has started, keep what it loaded (modules, pools, the app) out
    of the garbage collector's full passes: they live as long as the process, and a busy worker
    otherwise rescans them several times a second (gc.freeze, as pre-fork servers do)."""
    gc.collect()
    gc.freeze()


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


def require_extra(extra: str, command: str) -> None:
    """Stop with how to install `extra` if `command` cannot run without it."""
    try:
        require(extra, command)
    except MissingExtra as exc:
        raise fail(str(exc)) from exc


def start_embedded() -> str:
    try:
        return embedded.start()
    except MissingExtra as exc:
        raise fail(f"{exc}, or set DATABASE_URL to use another server") from exc
    except Exception as exc:
        raise fail(
            f"could not start the embedded PostgreSQL in {embedded.pgdata_dir()}: {exc}\n"
            "its log is in that directory; set DATABASE_URL to use another server"
        ) from exc


def connect_url(database_url: str | None) -> str:
    return database_url or start_embedded()


def checked_schema(schema: str) -> str:
    try:
        return validate_schema(schema)
    except ValueError as exc:
        raise fail(str(exc)) from exc


def run_db(url: str, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, turning database trouble into a message that says what to do."""
    try:
        return asyncio.run(work)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise fail(
            f"cannot reach PostgreSQL at {mask_url(url)}: {_masked_reason(exc, url)}\n"
            "check that it runs (`kongflow db status`) or set DATABASE_URL"
        ) from exc
    except MigrationError as exc:
        raise fail(str(exc)) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise fail(
            f"PostgreSQL refused: {exc.diag.message_primary or exc}\n"
            "the role lacks a privilege: apply the schema as its owner (`kongflow migrate`) and"
            " start workers with --no-migrate, or grant what is missing"
        ) from exc
    except psycopg.Error as exc:
        raise fail(f"PostgreSQL error: {_masked_reason(exc, url)}") from exc


def _masked_reason(exc: BaseException, url: str) -> str:
    """The driver's message, which may quote the URL it was given, with the password masked."""
    return str(exc).strip().replace(url, mask_url(url))


def with_client(database_url: str | None, schema: str, work: Callable[[Client], Awaitable[T]]) -> T:
    """Open a client on the schema (migrating it if needed), run `work`, close."""
    url = connect_url(database_url)

    async def run() -> T:
        # Fail fast with the driver's own reason, rather than after the pool's timeout.
        await (await psycopg.AsyncConnection.connect(url, connect_timeout=10)).close()
        async with Client(
            url,
            schema=checked_schema(schema),
            components=ALL_COMPONENTS,
            prepared_statements=False,  # a command's few statements: safe behind a pooler
        ) as client:
            return await work(client)

    return run_db(url, run())
