"""Warns about ready jobs a worker has no handler for: no error ever comes of them, they just
wait, so without this a typo in a task name is silent. A loop of its own, at its own slow pace,
so the claim path never pays for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("kongflow.worker")

INTERVAL = 60.0  # seconds between two looks
_MAX_WARNED = 1000


class UnknownTaskWatcher:
    """Looks every `interval` seconds, and warns once per task identifier."""

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        unknown_tasks_sql: str,
        worker_id: str,
        task_names: Sequence[str],
        queues: Sequence[str] | None,
        interval: float,
        on_error: Callable[[BaseException, str], None],
    ) -> None:
        self._pool = pool
        self._sql = unknown_tasks_sql
        self._worker_id = worker_id
        self._task_names = list(task_names)
        self._queues = None if queues is None else list(queues)
        self._interval = interval
        self._on_error = on_error
        self._warned: set[str] = set()

    async def run(self) -> None:
        while True:
            try:
                async with self._pool.connection() as conn:
                    cur = await conn.execute(
                        self._sql, {"tasks": self._task_names, "queues": self._queues}
                    )
                    rows = await cur.fetchall()
                for (identifier,) in rows:
                    if identifier in self._warned or len(self._warned) >= _MAX_WARNED:
                        continue
                    self._warned.add(identifier)
                    log.warning(
                        "worker %s: jobs of task %r are ready, and this worker has no handler"
                        " for it (it handles %s)",
                        self._worker_id,
                        identifier,
                        ", ".join(self._task_names),
                        extra={"task": identifier},
                    )
            except Exception as exc:
                self._on_error(exc, "looking for jobs of unknown tasks (retrying)")
            await asyncio.sleep(self._interval)
