"""performRunExecution: run a job on its endpoint and record what happened.

The run goes EXECUTING, the endpoint gets trigger.dev's EXECUTE_JOB request, and its answer
decides the outcome. An endpoint that is down or answers 5xx leaves the run WAITING_TO_EXECUTE
and the queue retries the execution with backoff until its attempts run out (then FAILURE).
The result is written only while the run is still EXECUTING, so a run cancelled meanwhile stays
CANCELED."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from kongflow.engine.errors import KongflowError
from kongflow.engine.tasks import RunningJob
from kongflow.protocol import (
    RUN_JOB_RESPONSE,
    ApiEventLog,
    EnvironmentRef,
    JobRef,
    OrganizationRef,
    ProjectRef,
    RunJobBody,
    RunJobError,
    RunJobInvalidPayload,
    RunJobSuccess,
    RunJobUnresolvedAuth,
    RunRef,
)
from kongflow.service.catalog import PerformRunExecution, RunFinished
from kongflow.service.database import Database
from kongflow.service.endpoint_api import EndpointApi
from kongflow.service.outbound import (
    Answer,
    MiB,
    Outbound,
    OutboundError,
    TimedOut,
    Unreachable,
    UrlRefused,
)
from kongflow.service.rows import ExecutionBegun, Json, RunContext, StalledRun
from kongflow.service.runs import TERMINAL, RunService
from kongflow.typed import CronPayload, WorkerQueue
from kongflow.typed.task import TypedHandler

log = logging.getLogger("kongflow.outbound")


class EndpointUnavailable(KongflowError):
    """Raised after recording WAITING_TO_EXECUTE, so that the queue retries the execution."""


@dataclass(frozen=True)
class Outcome:
    status: str
    output: Json = None
    retry: bool = False


class RunExecution:
    def __init__(
        self,
        queue: WorkerQueue,
        database: Database,
        runs: RunService,
        outbound: Outbound,
        request_timeout: float,
        *,
        answer_limit: int = 4 * MiB,
    ) -> None:
        self.queue = queue
        self.runs = runs
        self.outbound = outbound
        self.request_timeout = request_timeout
        self.answer_limit = answer_limit
        self._sql = database.sql

    def handlers(self) -> dict[str, TypedHandler]:
        return {PerformRunExecution.task: self.perform}

    async def perform(self, payload: PerformRunExecution, job: RunningJob) -> None:
        run = await self._begin(payload.id)
        if run is None:
            return
        started = time.monotonic()
        outcome = await self._call(run, run_job_body(run))
        duration_ms = int((time.monotonic() - started) * 1000)
        if outcome.retry and job.attempts >= job.max_attempts:
            outcome = Outcome("FAILURE", outcome.output)
        try:
            await self._finish(payload.id, outcome, duration_ms)
        except psycopg.DataError as exc:  # e.g. a \u0000 in the output, which jsonb refuses
            # The primary message only: PostgreSQL's detail and context quote the data.
            reason = exc.diag.message_primary or type(exc).__name__
            unstorable = _error(f"the endpoint's answer could not be stored: {reason}")
            await self._finish(payload.id, Outcome("FAILURE", unstorable), duration_ms)
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
                await tx.enqueue(RunFinished(id=run.id))

    async def _finish(self, run_id: str, outcome: Outcome, duration_ms: int) -> None:
        """Record the outcome, unless the run was cancelled meanwhile (CANCELED stays)."""
        status = "WAITING_TO_EXECUTE" if outcome.retry else outcome.status
        async with self.queue.transaction() as tx:
            cur = await tx.conn.execute(
                self._sql.finish_execution,
                {
                    "id": run_id,
                    "status": status,
                    "output": Jsonb(outcome.output) if outcome.output is not None else None,
                    "terminal": not outcome.retry,
                    "duration_ms": duration_ms,
                },
            )
            if await cur.fetchone() is None:
                return
            await self.runs.record_status(tx.conn, run_id, status, outcome.output)
            if status in TERMINAL:
                await tx.enqueue(RunFinished(id=run_id))

    async def _begin(self, run_id: str) -> RunContext | None:
        """EXECUTING (counting the execution), or None if the run is over or gone."""
        async with self.queue.transaction() as tx:
            async with tx.conn.cursor(row_factory=class_row(RunContext)) as cur:
                await cur.execute(self._sql.lock_run_context, (run_id,))
                run = await cur.fetchone()
            if run is None or run.status in TERMINAL:
                return None
            async with tx.conn.cursor(row_factory=class_row(ExecutionBegun)) as begin:
                await begin.execute(self._sql.begin_execution, (run_id,))
                begun = await begin.fetchone()
            assert begun is not None
            run = replace(run, started_at=begun.started_at, execution_count=begun.execution_count)
            await self.runs.record_status(tx.conn, run_id, "EXECUTING")
        return run

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


def interpret(response: Answer) -> Outcome:
    """What an EXECUTE_JOB answer means for the run (DESIGN.md, Jobs service step 3). Only
    the protocol's own fields reach the run's output: any other body stays out of it, since
    the run can be read by API clients (it goes to the log at DEBUG)."""
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
    if isinstance(answer, RunJobSuccess):
        return Outcome("SUCCESS", answer.output)
    if isinstance(answer, RunJobError):
        return Outcome("FAILURE", answer.error.wire())
    if isinstance(answer, RunJobInvalidPayload):
        return Outcome("INVALID_PAYLOAD", {"errors": [e.wire() for e in answer.errors]})
    if isinstance(answer, RunJobUnresolvedAuth):
        return Outcome("UNRESOLVED_AUTH", {"issues": answer.issues})
    return Outcome(
        "FAILURE",
        _error(f"the endpoint answered {answer.status}: io tasks are not supported by kongflow"),
    )


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
