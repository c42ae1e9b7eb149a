"""The documentation works as written: every ```python block of README.md and docs/ runs as its
own program (a block that defines tests runs under pytest, as the testing page says to run it),
every ```sql block runs on a migrated database, and the site builds with `mkdocs build --strict`.

Each block gets a database of its own, created on the test server and dropped afterwards, given
to it as DATABASE_URL: `Client()` in a snippet finds it there, with a fresh `kongflow` schema.
Snippets may connect to loopback addresses only (a `sitecustomize` refuses anything else), so a
block that would call out to the internet fails here rather than in a reader's terminal.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from kongflow import Client
from kongflow.service.schema import ALL_COMPONENTS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
TIMEOUT = 60  # seconds a block may run (they take one to five)
PARALLEL = 2  # blocks run at once
# What a run must not print even when it exits 0 (an error swallowed by a worker, a coroutine
# never awaited).
BAD_OUTPUT = ("Traceback (most recent call last)", "Exception ignored in", "was never awaited")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)")

# Loaded by every snippet's interpreter (through PYTHONPATH): connections and name lookups
# beyond this machine are refused, so no snippet talks to anything but 127.0.0.1.
GUARD = """
import ipaddress
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain"}


def _local(host):
    if host is None or host in _LOCAL_NAMES:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback or host in ("0.0.0.0", "::")
    except ValueError:
        return False


def _check(family, host):
    if family in (socket.AF_INET, socket.AF_INET6) and not _local(host):
        raise PermissionError(f"documentation snippets may only reach 127.0.0.1, not {host!r}")


_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
)


def connect(self, address):
    _check(self.family, address[0] if isinstance(address, tuple) else None)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self.family, address[0] if isinstance(address, tuple) else None)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    _check(socket.AF_INET, host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
    connect, connect_ex, getaddrinfo
)
"""

# SQL blocks that read another system's tables get a stand-in for them first, with the columns
# they use (the graphile-worker guide copies jobs out of `graphile_worker.jobs`).
STAND_INS = {
    "graphile_worker.jobs": """
        create schema graphile_worker;
        create table graphile_worker.jobs (
          id bigserial primary key, queue_name text, task_identifier text not null,
          payload json not null default '{}', priority int not null default 0,
          run_at timestamptz not null default now(), attempts int not null default 0,
          max_attempts int not null default 25, key text, locked_at timestamptz);
        insert into graphile_worker.jobs (task_identifier, payload, queue_name, key)
          values ('send_email', '{"to": "ada@example.com"}', 'mail', 'welcome:ada');
    """,
}

# The configuration the testing page asks an application's pytest for.
PYTEST_INI = "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_test_module(self) -> bool:
        return re.search(r"^(async )?def test_", self.code, re.MULTILINE) is not None


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, indented ones (in lists) included."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: unclosed code block")
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        found.append(Block(page, i + 1, opening["lang"].lower(), textwrap.dedent(body) + "\n"))
        i = end + 1
    return found


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
PYTHON = [b for b in BLOCKS if b.lang in ("python", "py")]
SQL = [b for b in BLOCKS if b.lang in ("sql", "postgresql")]


def database_url_for(server_url: str, dbname: str) -> str:
    """The server's URL (or libpq keyword string) naming another database."""
    if "://" in server_url:
        parts = urlsplit(server_url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(server_url, dbname=dbname)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A database of its own, dropped afterwards (with whatever a snippet left connected)."""
    name = f"kf_docs_{secrets.token_hex(5)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')  # type: ignore[arg-type]
    try:
        yield database_url_for(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')  # type: ignore[arg-type]


@dataclass(frozen=True)
class Outcome:
    """How a program ended: its exit status (None if it ran out of time) and what it printed."""

    returncode: int | None
    stdout: str
    stderr: str

    def check(self, what: str) -> str:
        """The standard output; the test fails, showing both outputs, unless it went well."""
        output = f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        if self.returncode is None:
            pytest.fail(f"{what} did not finish within {TIMEOUT} s\n{output}", pytrace=False)
        if self.returncode != 0:
            pytest.fail(f"{what} exited with {self.returncode}\n{output}", pytrace=False)
        bad = [marker for marker in BAD_OUTPUT if marker in self.stderr]
        if bad:
            pytest.fail(f"{what} exited 0 but printed {bad[0]!r}\n{output}", pytrace=False)
        return self.stdout


def execute(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Outcome:
    try:
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(None, _text(exc.stdout), _text(exc.stderr))
    return Outcome(done.returncode, done.stdout, done.stderr)


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


class Snippets:
    """Runs the selected Python blocks in the background, a few at a time, in test order: most
    of a block's time is spent waiting (on its interpreter's start, the database, a worker's
    poll), so the blocks overlap well, and each test only waits for its own."""

    def __init__(self, blocks: list[Block], server_url: str, workdir: Path) -> None:
        self._server_url = server_url
        self._workdir = workdir
        (workdir / "guard").mkdir()
        (workdir / "guard" / "sitecustomize.py").write_text(GUARD)
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="docs-snippet")
        self._outcomes = {
            block.id: self._pool.submit(self._run, block, n) for n, block in enumerate(blocks)
        }

    def outcome(self, block: Block) -> Outcome:
        return self._outcomes[block.id].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, block: Block, n: int) -> Outcome:
        cwd = self._workdir / f"block{n}"
        cwd.mkdir()
        with fresh_database(self._server_url) as url:
            env = snippet_env(url, cwd / "home", self._workdir / "guard")
            if block.is_test_module:
                (cwd / "pytest.ini").write_text(PYTEST_INI)
                (cwd / "test_snippet.py").write_text(block.code)
                command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                return execute([*command, "test_snippet.py"], cwd, env)
            (cwd / "snippet.py").write_text(block.code)
            return execute([sys.executable, "snippet.py"], cwd, env)


def snippet_env(database_url: str, home: Path, guard: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KONGFLOW_", "TRIGGER_", "OTEL_", "PYTEST_"))
    }
    env |= {
        "DATABASE_URL": database_url,
        "KONGFLOW_HOME": str(home),  # never the reader's embedded server, should one start
        "PYTHONPATH": str(guard),
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture(scope="module")
def snippets(
    request: pytest.FixtureRequest, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Snippets]:
    selected = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_python_block_runs"
        and hasattr(item, "callspec")
    ]
    runner = Snippets(selected, database_url, tmp_path_factory.mktemp("snippets"))
    yield runner
    runner.close()


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block: Block, snippets: Snippets) -> None:
    output = snippets.outcome(block).check(block.id)
    if block.is_test_module:
        assert re.search(r"\b\d+ passed\b", output), f"{block.id}: no test passed\n{output}"


@pytest.mark.parametrize("block", SQL, ids=[b.id for b in SQL])
async def test_sql_block_runs(block: Block, database_url: str) -> None:
    with fresh_database(database_url) as url:
        async with Client(url, components=ALL_COMPONENTS):
            pass  # migrated
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for table, stand_in in STAND_INS.items():
                if table in block.code:
                    await conn.execute(stand_in)  # type: ignore[arg-type]
            try:
                await conn.execute(block.code)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                pytest.fail(f"{block.id}: {type(exc).__name__}: {exc}", pytrace=False)


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def files(nav: object) -> Iterator[str]:
        if isinstance(nav, str):
            yield nav
        elif isinstance(nav, list):
            for item in nav:
                yield from files(item)
        elif isinstance(nav, dict):
            for value in nav.values():
                yield from files(value)

    listed = set(files(config["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in PAGES if p.is_relative_to(DOCS)}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"


def test_the_readmes_links_resolve() -> None:
    """README.md is read on its own (on a forge, in the package's page): its relative links
    must point at files that exist, as the site's own links are checked by the build."""
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", (ROOT / "README.md").read_text())
    assert targets
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` (a warning fails it: a broken link, a page missing from the nav's
    files, an API reference that does not resolve) on a copy of the docs."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "src").symlink_to(ROOT / "src")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    execute(command, tmp_path, env).check("mkdocs build --strict")
    assert (site / "index.html").exists()
    assert (site / "reference" / "index.html").exists()
