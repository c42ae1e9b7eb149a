"""Runs read and cancelled, and the io tasks trigger.dev's SDK sends while a run executes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import PathId, RunTaskBody
from kongflow.api.responses import (
    CompletedTask,
    RunAnswer,
    RunStatuses,
    RunStatusesV2,
    RunV2,
)
from kongflow.service.environments import Environment
from kongflow.service.rows import Run
from kongflow.service.runs import TERMINAL
from kongflow.service.service import JobsService

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
v2 = APIRouter(prefix="/api/v2/runs", tags=["runs"])


@router.get("/{run_id}", responses=documented(*AUTHED, 404))
async def get_run(run_id: PathId, env: Env, jobs: Jobs) -> RunAnswer:
    return RunAnswer.of(await found_run(jobs, env, run_id))


@router.get("/{run_id}/statuses", responses=documented(*AUTHED, 404))
async def run_statuses(run_id: PathId, env: Env, jobs: Jobs) -> RunStatuses:
    return RunStatuses.of(await found_run(jobs, env, run_id))


@router.post("/{run_id}/cancel", responses=documented(*AUTHED, 404))
async def cancel_run(run_id: PathId, env: Env, jobs: Jobs) -> RunAnswer:
    """CANCELED from any non-terminal status; a finished run is returned unchanged."""
    run = await jobs.runs.cancel_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return RunAnswer.of(run)


@router.post("/{run_id}/tasks", responses=documented(*AUTHED, 404, 409, 422))
async def run_task(run_id: PathId, body: RunTaskBody, env: Env, jobs: Jobs) -> CompletedTask:
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
    return CompletedTask(
        id=body.idempotency_key,
        name=body.name,
        noop=True,
        status="COMPLETED",
        idempotency_key=body.idempotency_key,
        attempts=1,
        output=None,
    )


@v2.get("/{run_id}", responses=documented(*AUTHED, 404))
async def get_run_v2(run_id: PathId, env: Env, jobs: Jobs) -> RunV2:
    """The run as trigger.dev's `client.getRun` reads it, with its tasks."""
    return RunV2.of(await found_run(jobs, env, run_id))


@v2.get("/{run_id}/statuses", responses=documented(*AUTHED, 404))
async def get_run_statuses_v2(run_id: PathId, env: Env, jobs: Jobs) -> RunStatusesV2:
    """The run's io statuses, as trigger.dev's `client.getRunStatuses` reads them (its
    status history is `GET /api/v1/runs/{id}/statuses`)."""
    return RunStatusesV2.of(await found_run(jobs, env, run_id))


async def found_run(jobs: JobsService, env: Environment, run_id: str) -> Run:
    run = await jobs.runs.get_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return run
