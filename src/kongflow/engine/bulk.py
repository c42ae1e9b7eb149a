"""Bulk enqueue by COPY: for a batch with no job keys there is nothing to merge, so the rows go
straight into the job table (after their queues are created and locked, as add_jobs does),
followed by one NOTIFY, all in one transaction."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from kongflow.engine.sql import EngineSQL

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    """A value in COPY's text format (backslash, tab and line breaks escaped). Most values have
    none of those, and looking is much cheaper than translating."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


async def copy_jobs(
    conn: AsyncConnection[Any], sql: EngineSQL, rows: Sequence[dict[str, Any]]
) -> Counter[tuple[str, str | None]]:
    """Insert validated specs (JobSpec.validated(), payloads encoded, none with a job key);
    returns how many went to each (task, queue)."""
    names = sorted({row["queue_name"] for row in rows if row["queue_name"] is not None})
    timed = any(spec["run_at"] is not None for spec in rows)
    async with conn.transaction():
        default_run_at = NULL
        if timed:  # the others get the transaction's now(), as the column default would
            cur = await conn.execute(sql.now)
            row = await cur.fetchone()
            assert row is not None
            default_run_at = row[0].isoformat()
        queue_ids: dict[str, int] = {}
        if names:
            # Created if missing, and locked as add_jobs does (a new statement then sees them).
            cur = await conn.execute(sql.lock_queues, (names,))
            (ids,) = await cur.fetchone() or ([],)
            cur = await conn.execute(sql.queue_names, (ids,))
            queue_ids = {name: queue_id for queue_id, name in await cur.fetchall()}
        lines = []
        for spec in rows:
            queue = spec["queue_name"]
            flags = spec["flags"]
            fields = [
                str(queue_ids[queue]) if queue is not None else NULL,
                _text(spec["identifier"]),
                _text(spec["payload"] or "{}"),
                str(spec["max_attempts"] or 25),
                str(spec["priority"] or 0),
                _text(json.dumps(dict.fromkeys(flags, True))) if flags else NULL,
            ]
            if timed:
                fields.append(spec["run_at"] or default_run_at)
            lines.append("\t".join(fields))
        lines.append("")
        async with conn.cursor().copy(sql.copy_jobs_at if timed else sql.copy_jobs) as copy:
            await copy.write("\n".join(lines))
        await conn.execute(sql.notify_jobs)
    return Counter((spec["identifier"], spec["queue_name"]) for spec in rows)
