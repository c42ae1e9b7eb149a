"""A least-privilege role (DML and EXECUTE, no DDL): the schema is applied by its owner, the role's
worker starts with --no-migrate and runs jobs; without it, the refusal says what to do."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from kongflow import Client


@pytest.fixture
def app_role(database_url: str, schema: str) -> Iterator[str]:
    """The URL of a role that may use the migrated schema's tables and functions, and no more
    (no CREATE on the database, which PUBLIC does not have)."""
    asyncio.run(_migrate(database_url, schema))
    role = f"kf_role_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in (
            f"create role {role} login",
            f"grant usage on schema {schema} to {role}",
            f"grant select, insert, update, delete on all tables in schema {schema} to {role}",
            f"grant usage, select on all sequences in schema {schema} to {role}",
            f"grant execute on all functions in schema {schema} to {role}",
        ):
            conn.execute(statement)  # type: ignore[arg-type]
    yield make_conninfo(database_url, user=role)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"drop owned by {role}")  # type: ignore[arg-type]
        conn.execute(f"drop role {role}")  # type: ignore[arg-type]


async def _migrate(database_url: str, schema: str) -> None:
    async with Client(database_url, schema=schema) as client:
        await client.add_job("hello", {"n": 1})


def worker(url: str, schema: str, cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    (cwd / "hello.py").write_text(
        "async def hello(payload, job):\n    return payload\ntasks = {'hello': hello}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "kongflow", "worker", "--tasks", "hello:tasks", "--once", *flags],
        env={**os.environ, "DATABASE_URL": url, "KONGFLOW_SCHEMA": schema},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_role_without_ddl_runs_a_worker_with_no_migrate(
    app_role: str, schema: str, tmp_path: Path, database_url: str
) -> None:
    refused = worker(app_role, schema, tmp_path)
    assert refused.returncode == 1
    assert "the role lacks a privilege" in refused.stderr and "--no-migrate" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = worker(app_role, schema, tmp_path, "--no-migrate")
    assert done.returncode == 0, done.stderr

    async def states() -> list[str]:
        async with Client(database_url, schema=schema) as client:
            return [job.state for job in await client.list_jobs()]

    assert asyncio.run(states()) == ["completed"]
