"""The embedded PostgreSQL: a real server from the `pgserver` package, kept in a per-user directory.

It is started on demand and left running, so workers, psql and tests in other processes share it
until `kongflow db stop`.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kongflow.extras import MissingExtra
from kongflow.settings import data_dir


@dataclass(frozen=True)
class EmbeddedStatus:
    data_dir: Path
    running: bool
    pid: int | None
    url: str | None


def pgdata_dir() -> Path:
    return data_dir() / "pgdata"


def start(pgdata: Path | None = None) -> str:
    """Start the embedded server if it is not running and return its URL; it keeps running."""
    return str(_get_server(pgdata or pgdata_dir(), cleanup_mode=None).get_uri())


def start_temporary(pgdata: Path) -> str:
    """Start a throwaway server that is stopped and deleted when this process exits (tests)."""
    return str(_get_server(pgdata, cleanup_mode="delete").get_uri())


def status(pgdata: Path | None = None) -> EmbeddedStatus:
    pgdata = pgdata or pgdata_dir()
    pid = _postmaster_pid(pgdata)
    url = None
    if pid is not None:
        url = start(pgdata)  # attaches to the running server to learn its socket
    return EmbeddedStatus(data_dir=pgdata, running=pid is not None, pid=pid, url=url)


def stop(pgdata: Path | None = None, timeout: float = 30.0) -> bool:
    """Fast-shutdown the server (SIGINT to the postmaster). Returns False if it was not running."""
    pid = _postmaster_pid(pgdata or pgdata_dir())
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while _process_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop in {timeout}s")
        time.sleep(0.05)
    return True


def _get_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes.
        warnings.simplefilter("ignore")
        try:
            from pgserver.postgres_server import PostgresServer
        except ImportError as exc:
            raise MissingExtra("embedded", "the embedded PostgreSQL", ["pgserver"]) from exc

        # Not pgserver.get_server(): it caches a handle per process, which would not notice a
        # server stopped since; a new handle attaches to a running server or starts one.
        return PostgresServer(pgdata.resolve(), cleanup_mode=cleanup_mode)


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first_line = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first_line.strip())
    except (FileNotFoundError, IndexError, ValueError):
        return None
    return pid if _process_alive(pid) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: the one given, else DATABASE_URL, else the embedded server (started)."""
    return url or os.environ.get("DATABASE_URL") or start()
