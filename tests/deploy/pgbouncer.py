"""A real PgBouncer (Debian's package) in front of the test database, for the deployment tests.

It listens on 127.0.0.1 on a free port and forwards to the server of `kongflow_database_url`,
over TCP or the unix socket that URL names. PgBouncer refuses to run as root: as root it is
started with `-u` (it reads its configuration first, then drops to the owner of the server's
socket directory, or `nobody` for a TCP server).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg

from tests.support.helpers import free_port

DATABASE = "kongflow"  # the name clients ask PgBouncer for


# What psycopg's server-side prepared statements look like when transaction pooling hands a
# client's next transaction to another server connection (see PreparedStatementClash).
_CLASH_SIGNS = ("prepared statement", "bind message supplies")


class PreparedStatementClash(AssertionError):
    """A statement PostgreSQL prepared on one server connection was looked up on another.
    psycopg prepares a statement on a connection once it has run 5 times there
    (`prepare_threshold`), then sends only its name (`_pg3_<n>`). Behind PgBouncer in
    transaction mode (before 1.21, or with max_prepared_statements = 0) the name is missing on
    the next server connection ("does not exist"), taken there by another client ("already
    exists"), or names another client's statement ("bind message supplies 5 parameters, but
    prepared statement ... requires 10"). kongflow's connections behind a pooler prepare
    nothing: `poll_only` workers, `prepared_statements=False` clients, the CLI's commands."""


def clashes(text: str) -> list[str]:
    """The lines of `text` that show a prepared statement looked up on the wrong connection."""
    return [line for line in text.splitlines() if any(sign in line for sign in _CLASH_SIGNS)]


@contextlib.contextmanager
def clashes_raised() -> Iterator[None]:
    """Turn a psycopg error caused by a prepared statement clash into PreparedStatementClash."""
    try:
        yield
    except psycopg.Error as exc:
        if clashes(str(exc)):
            raise PreparedStatementClash(str(exc)) from exc
        raise


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def version(binary: str) -> tuple[int, ...]:
    """PgBouncer's version, from `pgbouncer --version` ("PgBouncer 1.18.0" on its first line)."""
    first = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.split()
    return tuple(int(part) for part in first[1].split(".") if part.isdigit())


@dataclass(frozen=True)
class Upstream:
    """Where the test database really is, as libpq resolved the URL."""

    host: str  # an address, or a unix socket directory
    port: int
    user: str
    password: str | None
    dbname: str


def upstream_of(database_url: str) -> Upstream:
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        info = conn.info
        return Upstream(info.host, info.port, info.user, info.password or None, info.dbname)


def _quoted(value: str) -> str:
    if "'" in value or "\n" in value:
        raise ValueError(f"cannot put {value!r} in a PgBouncer connection string")
    return f"'{value}'"


class PgBouncer:
    """One PgBouncer process in transaction pooling mode; `url` is how clients reach it."""

    def __init__(self, binary: str, upstream: Upstream, workdir: Path, pool_size: int) -> None:
        self.port = free_port()
        self.url = f"postgresql://kongflow@127.0.0.1:{self.port}/{DATABASE}"
        self.log_path = workdir / "pgbouncer.log"
        target = [
            f"host={_quoted(upstream.host)}",
            f"port={upstream.port}",
            f"dbname={_quoted(upstream.dbname)}",
            f"user={_quoted(upstream.user)}",
        ]
        if upstream.password:
            target.append(f"password={_quoted(upstream.password)}")
        self.config = workdir / "pgbouncer.ini"
        self.config.write_text(
            "[databases]\n"
            f"{DATABASE} = {' '.join(target)}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            # Every client logs in as the database line's user, whatever name it gives.
            "auth_type = any\n"
            "pool_mode = transaction\n"
            # Few server connections for many clients: each transaction may land on another.
            f"default_pool_size = {pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 500\n"
            "server_round_robin = 1\n"
            "admin_users = kongflow\n"
            "logfile =\n" + ("max_prepared_statements = 0\n" if version(binary) >= (1, 21) else "")
            # 1.21 and later can track prepared statements; keep them off, as older releases
            # (Debian 12 has 1.18) and many hosted poolers have them.
        )
        command = [binary]
        if os.geteuid() == 0:
            owner = "nobody"
            if upstream.host.startswith("/"):
                owner = pwd.getpwuid(os.stat(upstream.host).st_uid).pw_name
            command += ["-u", owner]
        command.append(str(self.config))
        self._log: IO[str] = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self.process.returncode}):\n{self.log()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def admin(self, command: str) -> list[dict[str, object]]:
        """A SHOW command on PgBouncer's admin console (simple query protocol only)."""
        url = f"postgresql://kongflow@127.0.0.1:{self.port}/pgbouncer"
        with (
            psycopg.connect(url, autocommit=True) as conn,
            psycopg.ClientCursor(conn) as cur,
        ):
            cur.execute(command)  # type: ignore[arg-type]
            names = [column.name for column in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(OSError):
            self._log.close()
