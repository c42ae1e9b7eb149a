"""Versioned, idempotent schema migrations, safe when several processes start at once.

Each layer owns a component (the engine is "queue") and a package of numbered `.sql` files. All
pending migrations of the components asked for are applied in one transaction under an advisory
lock, and recorded in `<schema>.migrations`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection, sql

from kongflow.settings import validate_schema

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r":(SCHEMA|JOBS_CHANNEL|CANCEL_CHANNEL)\b")


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
    return {"jobs": f"{schema}:jobs", "cancel": f"{schema}:cancel"}


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


def render(text: str, schema: str) -> str:
    """Fill a migration's placeholders for one schema."""
    names = channels(schema)
    values = {
        "SCHEMA": f'"{validate_schema(schema)}"',
        "JOBS_CHANNEL": _literal(names["jobs"]),
        "CANCEL_CHANNEL": _literal(names["cancel"]),
    }
    return _PLACEHOLDER.sub(lambda m: values[m[1]], text)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


ENGINE_COMPONENT = ("queue", "kongflow.queue.migrations")


async def migrate(
    conn: AsyncConnection[object],
    schema: str,
    components: list[tuple[str, str]] | None = None,
) -> list[Migration]:
    """Apply what is pending; return what was applied. `conn` must not be in a transaction."""
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
        for component, package in components or [ENGINE_COMPONENT]:
            migrations = load_migrations(component, package)
            cur = await conn.execute(
                sql.SQL("select version, checksum from {}.migrations where component = %s").format(
                    ident
                ),
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
