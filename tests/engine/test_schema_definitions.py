"""Functions and views have one current definition each, applied when it changes; a database
upgraded from any released layout ends identical to a fresh one."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import psycopg
import pytest

from kongflow.engine.migrate import (
    ENGINE_COMPONENT,
    load_definitions,
    load_migrations,
    migrate,
    render,
)
from kongflow.service.schema import ALL_COMPONENTS
from tests.support.schema_catalog import snapshot

# The last migration of each component from before functions moved to definition files: those
# migrations created functions too, and must still upgrade.
LEGACY = {"queue": 8, "jobs": 3}

_DEFINED = re.compile(
    r"^create or replace (function|view) :SCHEMA\.(\w+)", re.MULTILINE | re.IGNORECASE
)
_ROUTINE_DDL = re.compile(
    r"^\s*(create( or replace)? (function|procedure|view|trigger)|alter function)",
    re.MULTILINE | re.IGNORECASE,
)


def _migrate(database_url: str, schema: str) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await migrate(conn, schema, ALL_COMPONENTS)

    asyncio.run(run())


def _apply_as_released(database_url: str, schema: str, upto: dict[str, int]) -> None:
    """What the runner of the first releases did: numbered migrations only, each recorded with
    its checksum."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f'create schema "{schema}"')  # type: ignore[arg-type]
        conn.execute(
            f'create table "{schema}".migrations ('  # type: ignore[arg-type]
            " component text not null, version int not null, name text not null,"
            " checksum text not null, applied_at timestamptz not null default now(),"
            " primary key (component, version))"
        )
        for component, package in ALL_COMPONENTS:
            for m in load_migrations(component, package)[: upto[component]]:
                conn.execute(render(m.text, schema))  # type: ignore[arg-type]
                conn.execute(
                    f'insert into "{schema}".migrations'  # type: ignore[arg-type]
                    " (component, version, name, checksum) values (%s, %s, %s, %s)",
                    (component, m.version, m.name, m.checksum),
                )


def _bookkeeping(conn: psycopg.Connection[Any], schema: str) -> tuple[list[Any], list[Any]]:
    migrations = conn.execute(
        f'select component, version, name, checksum from "{schema}".migrations'  # type: ignore[arg-type]
        " order by 1, 2"
    ).fetchall()
    definitions = conn.execute(
        f'select component, name, checksum from "{schema}".definitions order by 1, 2'  # type: ignore[arg-type]
    ).fetchall()
    return migrations, definitions


@pytest.mark.parametrize(
    "upto",
    [{"queue": 1, "jobs": 1}, LEGACY],
    ids=["from-the-first-release", "from-the-last-layout-without-definitions"],
)
def test_an_upgraded_schema_is_identical_to_a_fresh_one(
    database_url: str, schema: str, upto: dict[str, int]
) -> None:
    upgraded = f"t_{secrets.token_hex(6)}"
    try:
        _apply_as_released(database_url, upgraded, upto)
        _migrate(database_url, upgraded)
        _migrate(database_url, schema)
        with psycopg.connect(database_url) as conn:
            fresh_catalog = snapshot(conn, schema)
            upgraded_catalog = snapshot(conn, upgraded)
            assert _bookkeeping(conn, upgraded) == _bookkeeping(conn, schema)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{upgraded}" cascade')  # type: ignore[arg-type]
    assert fresh_catalog["functions"], "the catalog query found no functions"
    for kind in fresh_catalog:
        assert upgraded_catalog[kind] == fresh_catalog[kind], kind


def _routines(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    """Each function of the schema with the transaction id that last wrote its catalog row."""
    rows = conn.execute(
        "select p.proname, p.xmin::text::bigint from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = %s",
        (schema,),
    ).fetchall()
    return {name: xmin for name, xmin in rows}


def test_unchanged_definitions_are_not_applied_again(database_url: str, schema: str) -> None:
    _migrate(database_url, schema)
    with psycopg.connect(database_url) as conn:
        before = _routines(conn, schema)
    _migrate(database_url, schema)
    with psycopg.connect(database_url) as conn:
        assert _routines(conn, schema) == before


def test_a_changed_definition_is_applied_again_alone(database_url: str, schema: str) -> None:
    _migrate(database_url, schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # As if claim.sql had been edited since: the live function differs, and so does the
        # recorded checksum.
        conn.execute(
            f'alter function "{schema}"._claim_jobs(text, int, text[], text[], text[])'  # type: ignore[arg-type]
            " reset all"
        )
        conn.execute(
            f"update \"{schema}\".definitions set checksum = 'edited'"  # type: ignore[arg-type]
            " where component = 'queue' and name = 'claim.sql'"
        )
        before = _routines(conn, schema)
    _migrate(database_url, schema)
    with psycopg.connect(database_url) as conn:
        after = _routines(conn, schema)
        config = conn.execute(
            "select p.proconfig from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = %s and p.proname = '_claim_jobs'",
            (schema,),
        ).fetchone()
        _, definitions = _bookkeeping(conn, schema)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"_claimable", "_claim_jobs"}
    assert config is not None and "jit=off" in config[0]
    assert "plan_cache_mode=force_generic_plan" in config[0]
    claim = next(d for d in load_definitions(*ENGINE_COMPONENT) if d.name == "claim.sql")
    assert ("queue", "claim.sql", claim.checksum) in definitions


def test_every_function_and_view_has_exactly_one_definition(database_url: str, schema: str) -> None:
    defined: dict[str, str] = {}
    for component, package in ALL_COMPONENTS:
        for definition in load_definitions(component, package):
            assert ":INCLUDE" not in definition.text, definition.name
            for _, name in _DEFINED.findall(definition.text):
                assert name not in defined, f"{name} in {defined.get(name)} and {definition.name}"
                defined[name] = definition.name
    _migrate(database_url, schema)
    with psycopg.connect(database_url) as conn:
        live = {
            name
            for (name,) in conn.execute(
                "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
                " where n.nspname = %s"
                " union all select c.relname from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relkind = 'v'",
                (schema, schema),
            ).fetchall()
        }
    assert live == set(defined)


def test_migrations_after_the_legacy_ones_define_no_functions_or_views() -> None:
    for component, package in ALL_COMPONENTS:
        for m in load_migrations(component, package)[LEGACY[component] :]:
            assert not _ROUTINE_DDL.search(m.text), f"{component} {m.version}: see definitions/"


def test_definitions_render_every_placeholder() -> None:
    for component, package in ALL_COMPONENTS:
        for definition in load_definitions(component, package):
            text = render(definition.text, "some_schema")
            assert ":SCHEMA" not in text and "_CHANNEL" not in text
