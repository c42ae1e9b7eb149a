"""Versioned, idempotent schema migrations, safe when several processes start at once.

Each layer owns a component (the engine is "queue") and a package of numbered `.sql` files
(`<layer>.migrations`): tables, indexes, types and data changes. Its functions and views have one
current definition each, in the `.sql` files of the sibling package `<layer>.definitions` (listed
in its FILES, in order), if it has one.

All pending migrations of the components asked for are applied in one transaction under an
advisory lock, and recorded in `<schema>.migrations`; then, in the same transaction, every
definition file whose text differs from the one last applied (a checksum per file in
`<schema>.definitions`) is applied again, engine first. After any migration every file is applied
again, since a migration may have dropped or changed what definitions were built on. When nothing
changed nothing is executed but the lookups, so starting a process stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, sql

from kongflow.settings import validate_schema

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r":(SCHEMA|JOBS_CHANNEL|CANCEL_CHANNEL|SETTLED_CHANNEL)\b")
_INCLUDE = re.compile(r"^([ \t]*):INCLUDE\(([a-z0-9_]+\.sql)\)[ \t]*$", re.MULTILINE)


class MigrationError(RuntimeError):
    """The database cannot be migrated by this version of kongflow."""


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def channels(schema: str) -> dict[str, str]:
    """NOTIFY channel names, per schema so that several kongflow schemas share a server."""
    return {"jobs": f"{schema}:jobs", "cancel": f"{schema}:cancel", "settled": f"{schema}:settled"}


@dataclass(frozen=True)
class Definition:
    """One file of a component's current functions and views."""

    component: str
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def load_migrations(component: str, package: str) -> list[Migration]:
    found = []
    for entry in resources.files(package).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(
                Migration(component, int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{package}: migration versions must be 1..N without gaps: {versions}")
    return found


def definitions_package(migrations_package: str) -> str:
    """`kongflow.engine.migrations` -> `kongflow.engine.definitions`."""
    return migrations_package.rpartition(".")[0] + ".definitions"


def load_definitions(component: str, migrations_package: str) -> list[Definition]:
    """The component's definition files in their order of application (none if it has none)."""
    package = definitions_package(migrations_package)
    if importlib.util.find_spec(package) is None:
        return []
    order = getattr(importlib.import_module(package), "FILES", None)
    if not isinstance(order, tuple) or not all(isinstance(name, str) for name in order):
        raise MigrationError(f"{package}: FILES must be a tuple of file names")
    files = {e.name: e for e in resources.files(package).iterdir() if e.name.endswith(".sql")}
    if sorted(order) != sorted(files):
        raise MigrationError(
            f"{package}: FILES {sorted(order)} must list each .sql file once: {sorted(files)}"
        )
    return [
        Definition(component, name, _include(package, files[name].read_text(encoding="utf-8")))
        for name in order
    ]


def _include(package: str, text: str) -> str:
    """Splice `include/<name>` where a line is `:INCLUDE(<name>)`: a clause several functions
    share without the cost of a call (its leading comment lines stay out of the bodies). The
    definition's checksum covers what was spliced in, so editing a fragment applies its users."""

    def splice(match: re.Match[str]) -> str:
        entry = resources.files(package) / "include" / match[2]
        if not entry.is_file():
            raise MigrationError(f"{package}: {match[0].strip()} names no file in include/")
        lines = entry.read_text(encoding="utf-8").splitlines()
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        return "\n".join(match[1] + line if line else line for line in lines)

    return _INCLUDE.sub(splice, text)


def render(text: str, schema: str) -> str:
    """Fill the placeholders of a migration or definition file for one schema."""
    names = channels(schema)
    values = {
        "SCHEMA": f'"{validate_schema(schema)}"',
        "JOBS_CHANNEL": _literal(names["jobs"]),
        "CANCEL_CHANNEL": _literal(names["cancel"]),
        "SETTLED_CHANNEL": _literal(names["settled"]),
    }
    return _PLACEHOLDER.sub(lambda m: values[m[1]], text)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


ENGINE_COMPONENT = ("queue", "kongflow.engine.migrations")


async def migrate(
    conn: AsyncConnection[object],
    schema: str,
    components: list[tuple[str, str]] | None = None,
) -> list[Migration]:
    """Apply the pending migrations, then the changed definitions; return the migrations
    applied. `conn` must not be in a transaction."""
    applied: list[Migration] = []
    ident = sql.Identifier(validate_schema(schema))
    # Every component in one transaction under one lock: concurrent starters see all of it
    # applied, or none of it.
    async with conn.transaction():
        await conn.execute(
            "select pg_advisory_xact_lock(hashtext('kongflow:migrate'), hashtext(%s))",
            (schema,),
        )
        await conn.execute(sql.SQL("create schema if not exists {}").format(ident))
        await conn.execute(
            sql.SQL(
                "create table if not exists {}.migrations ("
                " component text not null,"
                " version int not null,"
                " name text not null,"
                " checksum text not null,"
                " applied_at timestamptz not null default now(),"
                " primary key (component, version))"
            ).format(ident)
        )
        await conn.execute(
            sql.SQL(
                "create table if not exists {}.definitions ("
                " component text not null,"
                " name text not null,"
                " checksum text not null,"
                " applied_at timestamptz not null default now(),"
                " primary key (component, name))"
            ).format(ident)
        )
        chosen = components or [ENGINE_COMPONENT]
        for component, package in chosen:
            applied += await _apply_migrations(conn, schema, component, package)
        for component, package in chosen:
            await _apply_definitions(conn, schema, component, package, everything=bool(applied))
    return applied


async def _apply_migrations(
    conn: AsyncConnection[object], schema: str, component: str, package: str
) -> list[Migration]:
    ident = sql.Identifier(schema)
    migrations = load_migrations(component, package)
    cur = await conn.execute(
        sql.SQL("select version, checksum from {}.migrations where component = %s").format(ident),
        (component,),
    )
    rows: list[Any] = await cur.fetchall()
    done = {int(version): str(checksum) for version, checksum in rows}
    current = max(done, default=0)
    if current > len(migrations):
        raise MigrationError(
            f"schema {schema!r} is at {component} version {current}, newer than this "
            f"kongflow knows ({len(migrations)}): upgrade kongflow"
        )
    for migration in migrations[:current]:
        if done.get(migration.version) != migration.checksum:
            raise MigrationError(
                f"{component} migration {migration.version} ({migration.name}) differs "
                f"from the one applied to schema {schema!r}: applied migrations must "
                "never change (recreate a development schema to pick up the change)"
            )
    applied = []
    for migration in migrations[current:]:
        await conn.execute(render(migration.text, schema))
        await conn.execute(
            sql.SQL(
                "insert into {}.migrations (component, version, name, checksum)"
                " values (%s, %s, %s, %s)"
            ).format(ident),
            (component, migration.version, migration.name, migration.checksum),
        )
        applied.append(migration)
    return applied


async def _apply_definitions(
    conn: AsyncConnection[object], schema: str, component: str, package: str, *, everything: bool
) -> list[Definition]:
    """Apply the component's definition files that changed (all of them if `everything`)."""
    ident = sql.Identifier(schema)
    definitions = load_definitions(component, package)
    cur = await conn.execute(
        sql.SQL("select name, checksum from {}.definitions where component = %s").format(ident),
        (component,),
    )
    rows: list[Any] = await cur.fetchall()
    recorded = {str(name): str(checksum) for name, checksum in rows}
    applied = []
    for definition in definitions:
        if everything or recorded.get(definition.name) != definition.checksum:
            await conn.execute(render(definition.text, schema))
            await conn.execute(
                sql.SQL(
                    "insert into {}.definitions (component, name, checksum) values (%s, %s, %s)"
                    " on conflict (component, name) do update"
                    " set checksum = excluded.checksum, applied_at = now()"
                ).format(ident),
                (component, definition.name, definition.checksum),
            )
            applied.append(definition)
    gone = sorted(set(recorded) - {d.name for d in definitions})
    if gone:
        # A file that was removed: the migration that removed its objects has run.
        await conn.execute(
            sql.SQL("delete from {}.definitions where component = %s and name = any(%s)").format(
                ident
            ),
            (component, gone),
        )
    return applied
