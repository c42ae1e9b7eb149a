"""performRunExecution: run a job on its endpoint and record what happened.

The run goes EXECUTING, the endpoint gets trigger.dev's EXECUTE_JOB request, and its answer
decides the outcome. An endpoint that is down or answers 5xx leaves the run WAITING_TO_EXECUTE
and the queue retries the execution with backoff until its attempts run out (then FAILURE).
The result is written only while the run is still EXECUTING, so a run cancelled meanwhile stays
CANCELED."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from kongflow.engine.errors import KongflowError
from kongflow.engine.tasks import RunningJob
from kongflow.protocol import (
    RUN_JOB_RESPONSE,
    RUN_METADATA_HEADER,
    ApiEventLog,
    AutoYieldConfig,
    ChildOutcome,
    EnvironmentRef,
    JobRef,
    OrganizationRef,
    ProjectRef,
    RunJobAutoYield,
    RunJobAutoYieldRateLimit,
    RunJobAutoYieldWithCompletedTask,
    RunJobBody,
    RunJobCanceled,
    RunJobError,
    RunJobInvalidPayload,
    RunJobResponse,
    RunJobResumeWithParallelTask,
    RunJobResumeWithTask,
    RunJobRetryWithTask,
    RunJobSuccess,
    RunJobUnresolvedAuth,
    RunJobYield,
    RunRef,
    TaskState,
)
from kongflow.service.catalog import PerformRunExecution, ResumeTask, RunFinished
from kongflow.service.database import Connection, Database
from kongflow.service.endpoint_api import EndpointApi
from kongflow.service.notifications import subscription_event
from kongflow.service.outbound import (
    Answer,
    MiB,
    Outbound,
    OutboundError,
    TimedOut,
    Unreachable,
    UrlRefused,
)
from kongflow.service.rows import Json, RunContext, StalledRun, Task
from kongflow.service.runs import TERMINAL, RunService, execution_key
from kongflow.service.tasks import TaskError, TaskService, parse_output
from kongflow.typed import CronPayload, Transaction, WorkerQueue
from kongflow.typed.task import TypedHandler

log = logging.getLogger("kongflow.outbound")


class EndpointUnavailable(KongflowError):
    """Raised after recording WAITING_TO_EXECUTE, so that the queue retries the execution."""


@dataclass(frozen=True)
class TaskRetry:
    """RETRY_WITH_TASK: the task's attempt failed; it runs again at `at`."""

    task_id: str
    at: datetime
    error: str


@dataclass(frozen=True)
class Outcome:
    """What an execution's answer means for the run: its next status and output, and what
    is to happen to its tasks (the run engine's side of trigger.dev's answers)."""

    status: str
    output: Json = None
    retry: bool = False  # the endpoint was unreachable: the queue retries the execution
    resume: tuple[str, ...] = ()  # tasks the run now waits on (RESUME_WITH_TASK)
    retries: tuple[TaskRetry, ...] = ()
    failed_task: str | None = None  # ERROR from inside a task: that task ERRORED
    completed_task: RunJobAutoYieldWithCompletedTask | None = None
    output_properties: tuple[tuple[str, list[Json]], ...] = ()
    reexecute: bool = False  # YIELD_EXECUTION and AUTO_YIELD_*: execute again
    reexecute_at: datetime | None = None
    yielded: str | None = None
    subscriptions: frozenset[str] = frozenset()  # SUCCESS / FAILURE: onSuccess, onFailure

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def plain(self) -> bool:
        """Only a status and an output: no task to act on, nothing to subscribe or enqueue."""
        return self == Outcome(self.status, self.output, self.retry)


class RunExecution:
    def __init__(
        self,
        queue: WorkerQueue,
        database: Database,
        runs: RunService,
        tasks: TaskService,
        outbound: Outbound,
        request_timeout: float,
        *,
        answer_limit: int = 4 * MiB,
        max_executions: int = 1000,
    ) -> None:
        self.queue = queue
        self.runs = runs
        self.max_executions = max_executions
        self.tasks = tasks
        self.outbound = outbound
        self.request_timeout = request_timeout
        self.answer_limit = answer_limit
        self.database = database
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {PerformRunExecution.task: self.perform}

    async def perform(self, payload: PerformRunExecution, job: RunningJob) -> None:
        begun = await self._begin(payload.id)
        if begun is None:
            return
        run, body = begun
        started = time.monotonic()
        outcome = await self._call(run, body)
        duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.retry and job.attempts >= job.max_attempts:
            outcome = Outcome("FAILURE", outcome.output)
        try:
            await self._finish(run, outcome, duration_ms)
        except psycopg.DataError as exc:  # e.g. a \u0000 in the output, which jsonb refuses
            # The primary message only: PostgreSQL's detail and context quote the data.
            reason = exc.diag.message_primary or type(exc).__name__
            unstorable = _error(f"the endpoint's answer could not be stored: {reason}")
            await self._finish(run, Outcome("FAILURE", unstorable), duration_ms)
        if outcome.retry:
            raise EndpointUnavailable(_message(outcome.output))

    async def fail_stalled_runs(self, payload: CronPayload, job: RunningJob) -> None:
        """Runs that can no longer finish on their own (their execution job died: a worker
        killed on the last attempt, a job timeout, a database error) end as FAILURE, so their
        subscribers hear of it. Runs every minute."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=class_row(StalledRun)) as cur:
                await cur.execute(self._sql.fail_stalled_runs)
                stalled = await cur.fetchall()
            for run in stalled:
                detail = _error(f"the execution stopped without a result: {run.last_error}")
                await tx.conn.execute(self._sql.set_run_output, (Jsonb(detail), run.id))
                await self.runs.record_status(tx.conn, run.id, "FAILURE", detail)
                await tx.conn.execute(self._sql.close_open_tasks, ("ERRORED", run.id))
                await tx.enqueue(RunFinished(id=run.id))

    async def _finish(self, run: RunContext, outcome: Outcome, duration_ms: int) -> None:
        """Record the outcome and act on it, unless the run was cancelled meanwhile (CANCELED
        stays): a plain outcome in one statement, one that acts on tasks in one transaction
        (the run locked first, then its tasks)."""
        if outcome.plain:
            async with self.database.connection() as conn:
                await conn.execute(
                    self._sql.finish_execution, self._finished(run, outcome, duration_ms)
                )
            return
        async with self.queue.transaction() as tx:
            if await self.tasks.lock_run(tx.conn, run.id) != "EXECUTING":
                return
            taken = await self._take_tasks(tx, run, outcome)
            outcome = replace(taken, subscriptions=outcome.subscriptions)
            for event in outcome.subscriptions:
                await tx.conn.execute(
                    self._sql.insert_subscription, (run.id, run.endpoint_url, event, "ENDPOINT")
                )
            await tx.conn.execute(
                self._sql.finish_execution, self._finished(run, outcome, duration_ms)
            )
            if outcome.reexecute:
                await tx.enqueue(
                    PerformRunExecution(id=run.id),
                    job_key=execution_key(run.id),
                    run_at=outcome.reexecute_at,
                )

    def _finished(self, run: RunContext, outcome: Outcome, duration_ms: int) -> dict[str, Any]:
        """`finish_execution`'s parameters, its runFinished job's included."""
        status = "WAITING_TO_EXECUTE" if outcome.retry else outcome.status
        _, announcement = self.queue.add_job_call(RunFinished(id=run.id))
        return announcement | {
            "id": run.id,
            "status": status,
            "output": Jsonb(outcome.output) if outcome.output is not None else None,
            "terminal": status in TERMINAL,
            "duration_ms": duration_ms,
            "closed": "CANCELED" if status in ("SUCCESS", "TIMED_OUT") else "ERRORED",
            "event": subscription_event(status),
        }

    async def _give_up(self, tx: Transaction, run: RunContext) -> None:
        """TIMED_OUT: an endpoint that yields or resumes for ever would be executed for ever."""
        detail = _error(f"the run was executed {run.execution_count} times without finishing")
        await tx.conn.execute(
            self._sql.finish_execution_early,
            {"id": run.id, "status": "TIMED_OUT", "output": Jsonb(detail)},
        )
        await self.runs.record_status(tx.conn, run.id, "TIMED_OUT", detail)
        await tx.conn.execute(self._sql.close_open_tasks, ("CANCELED", run.id))
        await tx.enqueue(RunFinished(id=run.id))

    async def _take_tasks(self, tx: Transaction, run: RunContext, outcome: Outcome) -> Outcome:
        """Apply the answer to the run's tasks; an answer about a task the run does not have
        (or cannot wait on) makes the run FAILURE instead."""
        conn = tx.conn
        for task_id, properties in outcome.output_properties:
            await conn.execute(
                self._sql.set_task_output_properties, (Jsonb(properties), task_id, run.id)
            )
        if outcome.failed_task is not None:
            await self.tasks.fail(conn, run.id, outcome.failed_task, outcome.output)
        if outcome.completed_task is not None:
            answer = outcome.completed_task
            try:
                output = parse_output(answer.output)
            except TaskError as exc:
                return Outcome("FAILURE", _error(str(exc)))
            shown: Json = [p.wire() for p in answer.properties] if answer.properties else None
            task = await self.tasks.complete(conn, run.id, answer.id, output, shown)
            if task is None or task.status != "COMPLETED":
                return Outcome("FAILURE", _error(f"task {answer.id!r} failed to complete"))
        yielded = outcome.yielded
        if yielded is not None:
            async with conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(self._sql.add_yielded_execution, (yielded, run.id))
                count: int | None = await cur.fetchone()
            if count is not None and count > MAX_YIELDED_EXECUTIONS:
                message = f"the run yielded more than {MAX_YIELDED_EXECUTIONS} times"
                return Outcome("FAILURE", _error(message))
        for retry in outcome.retries:
            async with conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(
                    self._sql.retry_task,
                    {
                        "id": retry.task_id,
                        "run_id": run.id,
                        "retry_at": retry.at,
                        "error": retry.error,
                    },
                )
                if await cur.fetchone() is None:
                    return Outcome(
                        "FAILURE",
                        _error(
                            f"the endpoint retries task {retry.task_id!r}: no open task of the run"
                        ),
                    )
            await tx.enqueue(
                ResumeTask(id=retry.task_id), job_key=resume_key(retry.task_id), run_at=retry.at
            )
        for task_id in outcome.resume:
            async with conn.cursor(row_factory=class_row(Task)) as cur:
                await cur.execute(self._sql.task_of_run, (task_id, run.id))
                task = await cur.fetchone()
            if task is None:
                return Outcome(
                    "FAILURE",
                    _error(f"the endpoint waits on task {task_id!r}: no task of the run"),
                )
            if task.status == "RUNNING" and task.operation is not None:
                continue  # its operation resumes the run when it is done
            at = task.retry_at if task.status == "WAITING" and task.retry_at else task.delay_until
            await tx.enqueue(ResumeTask(id=task.id), job_key=resume_key(task.id), run_at=at)
        return outcome

    async def _begin(self, run_id: str) -> tuple[RunContext, RunJobBody] | None:
        """EXECUTING (counting the execution) and the request to send, or None if the run is
        over or gone. An open run with executions left begins in one statement; the run
        locked is only for what it is not (and to give up on one executed too often)."""
        async with self.database.connection() as conn:
            run = await self._begun(conn, run_id)
        if run is None:
            async with self.queue.transaction() as tx:
                async with tx.conn.cursor(row_factory=class_row(RunContext)) as cur:
                    await cur.execute(self._sql.lock_run_context, (run_id,))
                    locked = await cur.fetchone()
                if locked is None or locked.status in TERMINAL:
                    return None
                if locked.execution_count >= self.max_executions:
                    await self._give_up(tx, locked)
                    return None
                run = await self._begun(tx.conn, run_id)  # it became open meanwhile
            if run is None:
                return None
        # Executed before: the tasks it completed go with it.
        executed_before = run.execution_count > 1
        cache, noops = await self.tasks.execution_cache(run_id, executed_before=executed_before)
        chunk_limit = chunk_limit_ms(self.request_timeout)
        body = run_job_body(run).model_copy(
            update={
                "tasks": cache.tasks,
                "cached_task_cursor": cache.cursor,
                "noop_tasks_set": noops,
                "yielded_executions": list(run.yielded_executions),
                "run_chunk_execution_limit": chunk_limit,
                "auto_yield_config": AUTO_YIELD_CONFIG if chunk_limit else None,
            }
        )
        return run, body

    async def _begun(self, conn: Connection, run_id: str) -> RunContext | None:
        """The run begun (EXECUTING, counted, in its history), or None if it is not open or
        has no executions left."""
        params = {"id": run_id, "terminal": sorted(TERMINAL), "max_executions": self.max_executions}
        async with conn.cursor(row_factory=class_row(RunContext)) as cur:
            await cur.execute(self._sql.begin_execution, params)
            return await cur.fetchone()

    async def _call(self, run: RunContext, body: RunJobBody) -> Outcome:
        api = EndpointApi(self.outbound, run.endpoint_url, run.api_key, limit=self.answer_limit)
        try:
            response = await api.execute(body, self.request_timeout)
        except UrlRefused as exc:  # the endpoint's host now resolves to a refused address
            return Outcome("FAILURE", _error(str(exc)))
        except TimedOut:
            return Outcome(
                "TIMED_OUT", _error(f"the endpoint did not answer within {self.request_timeout}s")
            )
        except Unreachable as exc:
            return Outcome("FAILURE", _error(str(exc)), retry=True)
        except OutboundError as exc:  # a redirect, an answer over the cap
            return Outcome("FAILURE", _error(str(exc)))
        return interpret(response)


#: The most a run may yield (io.yield) before it fails, as trigger.dev limits it.
MAX_YIELDED_EXECUTIONS = 100

#: What the SDK keeps in hand before the request's deadline (trigger.dev's buffer), and its
#: auto-yield thresholds (ms left at each point of a task), as trigger.dev sets them.
CHUNK_BUFFER_MS = 350
MIN_CHUNK_MS = 5000
AUTO_YIELD_CONFIG = AutoYieldConfig(
    start_task_threshold=750,
    before_execute_task_threshold=1500,
    before_complete_task_threshold=750,
    after_complete_task_threshold=750,
)


def chunk_limit_ms(request_timeout: float) -> int | None:
    """How long an execution may run before the SDK yields (and is executed again): just
    under kongflow's own deadline for the request. None (no auto-yield) for a deadline too
    short to leave room for the SDK's thresholds."""
    limit = int(request_timeout * 1000) - CHUNK_BUFFER_MS
    return limit if limit >= MIN_CHUNK_MS else None


def resume_key(task_id: str) -> str:
    """The job key of a task's resumption: one pending `resumeTask` per task."""
    return f"resumeTask:{task_id}"


def interpret(response: Answer) -> Outcome:
    """What an EXECUTE_JOB answer means for the run (DESIGN.md, Jobs service step 3, and its
    durable runs). Only the protocol's own fields reach the run's output: any other body stays
    out of it, since the run can be read by API clients (it goes to the log at DEBUG)."""
    code = response.status_code
    if code in (408, 504):
        return Outcome("TIMED_OUT", _error(f"the endpoint answered HTTP {code}"))
    if code >= 500:
        return Outcome("FAILURE", _error(f"the endpoint answered HTTP {code}"), retry=True)
    if code != 200:
        log.debug("EXECUTE_JOB answered HTTP %s: %.500r", code, response.content)
        return Outcome("FAILURE", _error(f"the endpoint answered HTTP {code}"))
    try:
        answer = RUN_JOB_RESPONSE.validate_json(response.content)
    except ValidationError as exc:
        log.debug("malformed EXECUTE_JOB answer: %s", exc)
        return Outcome(
            "FAILURE",
            _error("the endpoint's answer is malformed: it is not a trigger.dev RunJobResponse"),
        )
    outcome = _outcome(answer)
    return replace(outcome, subscriptions=_subscriptions(response))


def _outcome(answer: RunJobResponse | ChildOutcome) -> Outcome:
    if isinstance(answer, RunJobSuccess):
        return Outcome("SUCCESS", answer.output)
    if isinstance(answer, RunJobError):
        task = answer.task.id if answer.task is not None else None
        return Outcome("FAILURE", answer.error.wire(), failed_task=task)
    if isinstance(answer, RunJobInvalidPayload):
        return Outcome("INVALID_PAYLOAD", {"errors": [e.wire() for e in answer.errors]})
    if isinstance(answer, RunJobUnresolvedAuth):
        return Outcome("UNRESOLVED_AUTH", {"issues": answer.issues})
    if isinstance(answer, RunJobResumeWithTask):
        return Outcome(
            "WAITING_TO_CONTINUE",
            resume=(answer.task.id,),
            output_properties=_output_properties(answer.task),
        )
    if isinstance(answer, RunJobRetryWithTask):
        retry = TaskRetry(answer.task.id, answer.retry_at, answer.error.message)
        return Outcome("WAITING_TO_CONTINUE", retries=(retry,))
    if isinstance(answer, RunJobCanceled):
        return Outcome("CANCELED")
    if isinstance(answer, RunJobYield):
        return Outcome("WAITING_TO_EXECUTE", reexecute=True, yielded=answer.key)
    if isinstance(answer, RunJobAutoYield):
        return Outcome("WAITING_TO_EXECUTE", reexecute=True)
    if isinstance(answer, RunJobAutoYieldWithCompletedTask):
        return Outcome("WAITING_TO_EXECUTE", reexecute=True, completed_task=answer)
    if isinstance(answer, RunJobAutoYieldRateLimit):
        return Outcome("WAITING_TO_EXECUTE", reexecute=True, reexecute_at=_epoch_ms(answer.reset))
    return _parallel(answer)


def _parallel(answer: RunJobResumeWithParallelTask) -> Outcome:
    """io.parallel: each child's own outcome; the first that ends the run ends it, otherwise
    the run waits on all the children that wait (and executes again if one yielded)."""
    children = [_outcome(child) for child in answer.child_errors]
    for child in children:
        if child.terminal:
            return child
    resume = tuple(t for child in children for t in child.resume)
    retries = tuple(r for child in children for r in child.retries)
    reexecute = any(child.reexecute for child in children) or not (resume or retries)
    times = [child.reexecute_at for child in children if child.reexecute_at is not None]
    return Outcome(
        "WAITING_TO_EXECUTE" if reexecute else "WAITING_TO_CONTINUE",
        resume=resume,
        retries=retries,
        output_properties=_output_properties(answer.task)
        + tuple(p for child in children for p in child.output_properties),
        completed_task=next((c.completed_task for c in children if c.completed_task), None),
        reexecute=reexecute,
        reexecute_at=max(times) if times else None,
    )


def _output_properties(task: TaskState) -> tuple[tuple[str, list[Json]], ...]:
    if not task.output_properties:
        return ()
    return ((task.id, [p.wire() for p in task.output_properties]),)


def _subscriptions(response: Answer) -> frozenset[str]:
    """The outcomes the endpoint wants to hear of (`x-trigger-run-metadata`)."""
    raw = response.headers.get(RUN_METADATA_HEADER)
    if not raw:
        return frozenset()
    try:
        metadata = json.loads(raw)
    except ValueError:
        return frozenset()
    if not isinstance(metadata, dict):
        return frozenset()
    wanted = set()
    if metadata.get("successSubscription") is True:
        wanted.add("SUCCESS")
    if metadata.get("failedSubscription") is True:
        wanted.add("FAILURE")
    return frozenset(wanted)


def _epoch_ms(value: float) -> datetime | None:
    """An epoch-milliseconds time, or None (now) if it is not a sane one."""
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def run_job_body(run: RunContext) -> RunJobBody:
    """trigger.dev's RunJobBody for a run, from its `run_context` row (once begun)."""
    assert run.started_at is not None, "begin_execution sets started_at"
    return RunJobBody(
        event=ApiEventLog(
            id=run.event_id,
            name=run.event_name,
            payload=run.event_payload,
            context=run.event_context,
            timestamp=run.event_timestamp,
            deliver_at=run.event_deliver_at,
            delivered_at=run.event_delivered_at,
        ),
        job=JobRef(id=run.job_slug, version=run.version),
        run=RunRef(
            id=run.id,
            is_test=run.is_test,
            is_retry=run.execution_count > 1,
            started_at=run.started_at,
        ),
        environment=EnvironmentRef(
            id=run.environment_id, slug=run.environment_slug, type=run.environment_type
        ),
        organization=OrganizationRef(
            id=run.organization_id,
            title=run.organization_title,
            slug=run.organization_slug,
        ),
        project=ProjectRef(id=run.project_id, name=run.project_name, slug=run.project_slug),
    )


def _error(message: str) -> dict[str, Json]:
    return {"message": message}


def _message(output: Json) -> str:
    """An error output's message ("None" without one), for the retried job's last error."""
    return str(output.get("message") if isinstance(output, dict) else None)
