"""A schema's catalog as plain data, with the schema's name taken out, so that two schemas built
by different paths (fresh, upgraded) can be compared object by object."""

from __future__ import annotations

from typing import Any

import psycopg

# Each query takes the schema name as its only parameter and returns rows that are compared as
# they are (sorted); names and definitions, never oids.
_QUERIES: dict[str, str] = {
    "relations": """
        select c.relname, c.relkind, c.relpersistence, coalesce(c.reloptions, '{}')
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %s
    """,
    "columns": """
        select c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, a.attgenerated,
               pg_get_expr(d.adbin, d.adrelid), coalesce(a.attoptions, '{}')
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where n.nspname = %s and a.attnum > 0 and not a.attisdropped
    """,
    "constraints": """
        select coalesce(c.relname, t.typname), k.conname, k.contype, pg_get_constraintdef(k.oid)
          from pg_constraint k
          join pg_namespace n on n.oid = k.connamespace
          left join pg_class c on c.oid = k.conrelid
          left join pg_type t on t.oid = k.contypid
         where n.nspname = %s
    """,
    "indexes": "select tablename, indexname, indexdef from pg_indexes where schemaname = %s",
    "functions": """
        select p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.prokind,
               l.lanname, p.provolatile, p.proisstrict, p.prosecdef, p.proparallel,
               coalesce(p.proconfig, '{}'), p.prosrc
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_language l on l.oid = p.prolang
         where n.nspname = %s
    """,
    "views": """
        select c.relname, pg_get_viewdef(c.oid)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %s and c.relkind in ('v', 'm')
    """,
    "triggers": """
        select c.relname, t.tgname, pg_get_triggerdef(t.oid)
          from pg_trigger t
          join pg_class c on c.oid = t.tgrelid
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = %s and not t.tgisinternal
    """,
    "types": """
        select t.typname, t.typtype
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where n.nspname = %s
    """,
}


def snapshot(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every object of `schema`, by kind; the schema's name is replaced by `SCHEMA`."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    for kind, query in _QUERIES.items():
        rows = conn.execute(query, (schema,)).fetchall()  # type: ignore[call-overload]
        found[kind] = sorted(
            (tuple(_neutral(value, schema) for value in row) for row in rows), key=repr
        )
    return found


def _neutral(value: Any, schema: str) -> Any:
    if isinstance(value, str):
        return value.replace(schema, "SCHEMA")
    if isinstance(value, list):
        return [_neutral(v, schema) for v in value]
    return value
