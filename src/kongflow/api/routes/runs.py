"""Runs read and cancelled, and the io tasks trigger.dev's SDK sends while a run executes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import PathId, RunTaskBody
from kongflow.protocol import iso_time
from kongflow.service.environments import Environment
from kongflow.service.rows import Json, Run
from kongflow.service.runs import TERMINAL
from kongflow.service.service import JobsService

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


@router.get("/{run_id}", responses=documented(*AUTHED, 404))
async def get_run(run_id: PathId, env: Env, jobs: Jobs) -> dict[str, Any]:
    return run_body(await found_run(jobs, env, run_id))


@router.get("/{run_id}/statuses", responses=documented(*AUTHED, 404))
async def run_statuses(run_id: PathId, env: Env, jobs: Jobs) -> dict[str, Any]:
    run = await found_run(jobs, env, run_id)
    return {
        "run": {"id": run.id, "status": run.status, "output": run.output},
        "statuses": [
            {"status": s.status, "at": s.at.isoformat(), "detail": s.detail} for s in run.statuses
        ],
    }


@router.post("/{run_id}/cancel", responses=documented(*AUTHED, 404))
async def cancel_run(run_id: PathId, env: Env, jobs: Jobs) -> dict[str, Any]:
    """CANCELED from any non-terminal status; a finished run is returned unchanged."""
    run = await jobs.runs.cancel_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return run_body(run)


@router.post("/{run_id}/tasks", responses=documented(*AUTHED, 404, 409, 422))
async def run_task(run_id: PathId, body: RunTaskBody, env: Env, jobs: Jobs) -> dict[str, Any]:
    """What trigger.dev's v2 SDK calls for io tasks. kongflow runs jobs without io tasks,
    but completes the no-op ones (io.logger) so that jobs which log still run."""
    run = await found_run(jobs, env, run_id)
    if run.status in TERMINAL:
        raise HTTPException(409, f"run {run_id} is {run.status}: it takes no more tasks")
    if not body.noop:
        raise HTTPException(
            422,
            f"io task {body.name!r} is not supported: kongflow runs jobs without io tasks "
            "(only no-op ones such as io.logger)",
        )
    return {
        "id": body.idempotency_key,
        "name": body.name,
        "noop": True,
        "status": "COMPLETED",
        "idempotencyKey": body.idempotency_key,
        "attempts": 1,
        "output": None,
    }


async def found_run(jobs: JobsService, env: Environment, run_id: str) -> Run:
    run = await jobs.runs.get_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return run


def run_body(run: Run) -> dict[str, Json]:
    return {
        "id": run.id,
        "jobId": run.job_slug,
        "version": run.version,
        "number": run.number,
        "status": run.status,
        "isTest": run.is_test,
        "output": run.output,
        "eventId": run.event_id,
        "createdAt": iso_time(run.created_at),
        "queuedAt": iso_time(run.queued_at),
        "startedAt": iso_time(run.started_at),
        "completedAt": iso_time(run.completed_at),
        "updatedAt": iso_time(run.updated_at),
        "executionCount": run.execution_count,
        "executionDurationInMs": run.execution_duration_ms,
    }
