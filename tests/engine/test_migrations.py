"""Migrations: versioned, idempotent, safe with several processes at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import psycopg
import pytest

from kongflow import Client
from kongflow.engine.migrate import ENGINE_COMPONENT, MigrationError, load_migrations, render
from kongflow.service.schema import ALL_COMPONENTS

ENGINE_MIGRATIONS = load_migrations(*ENGINE_COMPONENT)
SERVICE_MIGRATIONS = [m for c in ALL_COMPONENTS for m in load_migrations(*c)]


def _versions(database_url: str, schema: str) -> list[tuple[str, int]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            f'select component, version from "{schema}".migrations order by 1, 2'  # type: ignore[arg-type]
        ).fetchall()


def test_rendering_fills_every_placeholder() -> None:
    for migration in load_migrations(*ENGINE_COMPONENT):
        text = render(migration.text, "some_schema")
        assert ":SCHEMA" not in text and "_CHANNEL" not in text
        assert '"some_schema".' in text


def test_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="schema"):
        render("", 'x"; drop table y; --')


async def test_migrating_twice_changes_nothing(database_url: str, schema: str) -> None:
    async with Client(database_url, schema=schema) as client:
        await client.migrate()
        await client.migrate()
    versions = _versions(database_url, schema)
    assert versions == [("queue", m.version) for m in ENGINE_MIGRATIONS]


def test_concurrent_migrations_from_several_processes(database_url: str, schema: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kongflow", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    applied = f"applied {len(SERVICE_MIGRATIONS)} migration"  # the CLI migrates every layer
    assert sum(applied in out for out in outputs) == 1, outputs
    assert sum("up to date" in out for out in outputs) == 3, outputs
    assert _versions(database_url, schema) == sorted(
        (m.component, m.version) for m in SERVICE_MIGRATIONS
    )


def test_a_newer_database_is_refused(database_url: str, schema: str) -> None:
    asyncio.run(_open_client(database_url, schema))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f'insert into "{schema}".migrations (component, version, name, checksum)'  # type: ignore[arg-type]
            " values ('queue', 99, 'future', 'x')"
        )
    with pytest.raises(MigrationError, match="upgrade kongflow"):
        asyncio.run(_open_client(database_url, schema))
    env = {**os.environ, "DATABASE_URL": database_url, "KONGFLOW_SCHEMA": schema}
    done = subprocess.run(
        [sys.executable, "-m", "kongflow", "migrate"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "upgrade kongflow" in done.stderr


async def _open_client(database_url: str, schema: str) -> None:
    async with Client(database_url, schema=schema):
        pass


def test_a_changed_applied_migration_is_refused(database_url: str, schema: str) -> None:
    asyncio.run(_open_client(database_url, schema))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"update \"{schema}\".migrations set checksum = 'edited' where version = 1"  # type: ignore[arg-type]
        )
    with pytest.raises(MigrationError, match="must never change"):
        asyncio.run(_open_client(database_url, schema))


async def test_claims_skip_jit_and_job_tables_vacuum_by_churn(client: Client) -> None:
    """Settings that are part of the claim's and the settle's definitions: on LLVM-built servers
    a claim otherwise compiled its plan every call, and claims reuse their plans; the job tables
    get churn-based autovacuum settings (migration 0005)."""
    async with client.pool.connection() as conn:
        cur = await conn.execute(
            "select p.proname, p.proconfig from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %s and p.proname in ('_claim_jobs', '_settle_jobs')",
            (client.schema,),
        )
        configs = {name: config for name, config in await cur.fetchall()}
        cur = await conn.execute(
            "select c.relname, c.reloptions from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname in ('_jobs', '_finished_jobs')",
            (client.schema,),
        )
        options = {name: opts for name, opts in await cur.fetchall()}
    assert all("jit=off" in configs[name] for name in ("_claim_jobs", "_settle_jobs"))
    assert "plan_cache_mode=force_generic_plan" in configs["_claim_jobs"]
    assert "autovacuum_vacuum_scale_factor=0.01" in options["_jobs"]
    assert "autovacuum_vacuum_scale_factor=0.05" in options["_finished_jobs"]


def test_the_command_line_loads_no_web_or_metrics_stack() -> None:
    """A worker process pays only for what it runs (the idle worker's memory)."""
    probe = (
        "import sys, kongflow.cli;"
        "loaded = {m.split('.')[0] for m in sys.modules};"
        "print(sorted(loaded & {'fastapi', 'uvicorn', 'httpx', 'prometheus_client'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
