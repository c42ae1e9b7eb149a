"""Task operations kongflow performs itself (trigger.dev's performTaskOperation): the request of
an io.backgroundFetch / backgroundFetchResponse, made by kongflow through its outbound client
and network policy while the run waits, however long the target takes. The task completes with
the answer (its JSON, or `{status, headers, body}` for fetch-response) and the run goes on; an
unreachable target or a 5xx is retried by the queue, and the last failure fails the task."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.rows import class_row

from kongflow.engine.errors import KongflowError
from kongflow.engine.tasks import RunningJob
from kongflow.service.catalog import PerformTaskOperation
from kongflow.service.database import Database
from kongflow.service.outbound import MiB, Outbound, OutboundError, Unreachable, UrlRefused
from kongflow.service.rows import Json, Task
from kongflow.service.tasks import TaskError, TaskService, parse_output, performed_by_kongflow
from kongflow.typed import WorkerQueue
from kongflow.typed.task import TypedHandler

log = logging.getLogger("kongflow.outbound")

DEFAULT_FETCH_TIMEOUT = 240.0  # the longest a fetch may take: within its job's timeout
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class FetchFailed(KongflowError):
    """The target could not be reached or answered 5xx: the queue tries again."""


class TaskOperations:
    def __init__(
        self,
        queue: WorkerQueue,
        database: Database,
        tasks: TaskService,
        outbound: Outbound,
        *,
        answer_limit: int = 4 * MiB,
    ) -> None:
        self.queue = queue
        self.database = database
        self.tasks = tasks
        self.outbound = outbound
        self.answer_limit = answer_limit
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {PerformTaskOperation.task: self.perform}

    async def perform(self, payload: PerformTaskOperation, job: RunningJob) -> None:
        async with (
            self.database.connection() as conn,
            conn.cursor(row_factory=class_row(Task)) as cur,
        ):
            await cur.execute(self._sql.task_by_id, (payload.id,))
            task = await cur.fetchone()
        if task is None or not performed_by_kongflow(task):
            return  # done, cancelled or gone meanwhile
        last_attempt = job.attempts >= job.max_attempts
        try:
            output = await self._fetch(task)
        except FetchFailed as exc:
            if not last_attempt:
                raise
            await self._finish(task, error=str(exc))
            return
        except (ValueError, OutboundError) as exc:  # refused, malformed: not worth a retry
            await self._finish(task, error=str(exc))
            return
        try:
            await self._finish(task, output=output)
        except psycopg.DataError as exc:  # e.g. a \u0000 in the answer, which jsonb refuses
            # The primary message only: PostgreSQL's detail quotes the data.
            reason = exc.diag.message_primary or type(exc).__name__
            await self._finish(task, error=f"the answer could not be stored: {reason}")

    async def _fetch(self, task: Task) -> Json:
        params = _object(task.params)
        url = params.get("url")
        if not isinstance(url, str):
            raise ValueError("the fetch has no URL")
        init = _object(params.get("requestInit"))
        method = str(init.get("method") or "GET").upper()
        if method not in _METHODS:
            raise ValueError(f"{method!r} is not an HTTP method")
        headers = _object(init.get("headers"))
        body = init.get("body")
        duration = _object(params.get("timeout")).get("durationInMs")
        seconds = DEFAULT_FETCH_TIMEOUT
        if isinstance(duration, (int, float)) and duration > 0:
            seconds = min(duration / 1000, DEFAULT_FETCH_TIMEOUT)
        try:
            answer = await self.outbound.request(
                method,
                url,
                limit=self.answer_limit,
                target="fetch target",
                timeout=seconds,
                headers={str(k): str(v) for k, v in headers.items()},
                content=body.encode() if isinstance(body, str) else None,
            )
        except UrlRefused:
            raise
        except Unreachable as exc:
            raise FetchFailed(str(exc)) from None
        if answer.status_code >= 500:
            raise FetchFailed(f"{url} answered HTTP {answer.status_code}")
        if task.operation == "fetch-response":
            return {
                "status": answer.status_code,
                "headers": dict(answer.headers),
                "body": _body(answer.content),
            }
        if not answer.is_success:
            raise ValueError(f"{url} answered HTTP {answer.status_code}")
        return _body(answer.content)

    async def _finish(self, task: Task, *, output: Json = None, error: str | None = None) -> None:
        """The task COMPLETED or ERRORED, and its run resumed, in one transaction. The run is
        locked first, so an execution recording its answer meanwhile sees the task done, or
        is seen by this as waiting."""
        async with self.queue.transaction() as tx:
            await self.tasks.lock_run(tx.conn, task.run_id)
            if error is None:
                await self.tasks.complete(tx.conn, task.run_id, task.id, output)
            else:
                log.info("background fetch of task %s failed: %s", task.id, error)
                await self.tasks.fail(tx.conn, task.run_id, task.id, {"message": error})
            await self.tasks.resume_run(tx, task.run_id)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _body(content: bytes) -> Json:
    """The answer's JSON, or its text when it is not JSON."""
    text = content.decode("utf-8", errors="replace")
    try:
        return parse_output(text)
    except TaskError:
        return text
