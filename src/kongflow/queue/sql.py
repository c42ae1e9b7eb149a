"""The SQL the engine's Python side sends, in one place. Everything else lives in the schema's
functions (see migrations/); these statements only call them or read the views."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kongflow.settings import validate_schema


@dataclass(frozen=True)
class EngineSQL:
    add_job: str
    add_jobs: str
    remove_job: str
    complete_jobs: str
    permanently_fail_jobs: str
    reschedule_jobs: str
    get_job: str
    cancel_job: str


@cache
def engine_sql(schema: str) -> EngineSQL:
    """The statements for one schema (the name is validated, then quoted into the text)."""
    s = f'"{validate_schema(schema)}"'
    return EngineSQL(
        add_job=(
            f"select * from {s}.add_job("
            "identifier => %(identifier)s, payload => %(payload)s::json,"
            " queue_name => %(queue_name)s, run_at => %(run_at)s::timestamptz,"
            " max_attempts => %(max_attempts)s::int, job_key => %(job_key)s,"
            " priority => %(priority)s::int, flags => %(flags)s::text[],"
            " job_key_mode => %(job_key_mode)s)"
        ),
        add_jobs=(
            f"select * from {s}.add_jobs("
            f"array(select r from json_populate_recordset(null::{s}.job_spec, %s::json) r), %s)"
        ),
        remove_job=f"select * from {s}.remove_job(%s) where id is not null",
        complete_jobs=f"select * from {s}.complete_jobs(%s::bigint[])",
        permanently_fail_jobs=f"select * from {s}.permanently_fail_jobs(%s::bigint[], %s)",
        reschedule_jobs=(
            f"select * from {s}.reschedule_jobs(%(ids)s::bigint[], %(run_at)s::timestamptz,"
            " %(priority)s::int, %(attempts)s::int, %(max_attempts)s::int)"
        ),
        get_job=f"select * from {s}._all_jobs where id = %s",
        cancel_job=f"select * from {s}.cancel_job(%s) where id is not null",
    )
