"""Runs read and cancelled, their io statuses, and the io tasks trigger.dev's SDK creates,
completes and fails while a run executes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import (
    MAX_ID_LENGTH,
    CompleteTaskBody,
    FailTaskBody,
    PathId,
    RunTaskBody,
    StatusUpdateBody,
)
from kongflow.api.responses import (
    IoStatusAnswer,
    RunAnswer,
    RunStatuses,
    RunStatusesV2,
    RunV2,
    ServerTask,
    TaskAnswer,
)
from kongflow.protocol import LAZY_LOADED_CACHED_TASKS, SERIALIZED_TASK_OUTPUT
from kongflow.service.environments import Environment
from kongflow.service.rows import Run, Task
from kongflow.service.service import JobsService
from kongflow.service.tasks import NewTask, TaskError, parse_output

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
v2 = APIRouter(prefix="/api/v2/runs", tags=["runs"])

TriggerVersion = Annotated[str | None, Header(alias="trigger-version", max_length=32)]


@router.get("/{run_id}", responses=documented(*AUTHED, 404))
async def get_run(run_id: PathId, env: Env, jobs: Jobs) -> RunAnswer:
    return RunAnswer.of(await found_run(jobs, env, run_id))


@router.get("/{run_id}/history", responses=documented(*AUTHED, 404))
async def run_history(run_id: PathId, env: Env, jobs: Jobs) -> RunStatuses:
    """The run's status history, oldest first."""
    return RunStatuses.of(await found_run(jobs, env, run_id))


@router.post("/{run_id}/cancel", responses=documented(*AUTHED, 404))
async def cancel_run(run_id: PathId, env: Env, jobs: Jobs) -> RunAnswer:
    """CANCELED from any non-terminal status, with its open tasks; a finished run is
    returned unchanged."""
    run = await jobs.runs.cancel_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return RunAnswer.of(run)


@router.put("/{run_id}/statuses/{key}", responses=documented(*AUTHED, 404))
async def update_status(
    run_id: PathId, key: PathId, body: StatusUpdateBody, env: Env, jobs: Jobs
) -> IoStatusAnswer:
    """io.createStatus and status.update."""
    update = body.model_dump(exclude_none=True)
    status = await jobs.statuses.update(env, run_id, key, update)
    if status is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return IoStatusAnswer.of(status)


@router.post("/{run_id}/tasks", responses=documented(*AUTHED, 404))
async def run_task(
    run_id: PathId,
    body: RunTaskBody,
    env: Env,
    jobs: Jobs,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="idempotency-key", max_length=MAX_ID_LENGTH)
    ] = None,
    trigger_version: TriggerVersion = None,
    cursor: Annotated[
        str | None, Header(alias="x-cached-tasks-cursor", max_length=MAX_ID_LENGTH)
    ] = None,
) -> TaskAnswer | ServerTask:
    """The run's task for the request's Idempotency-Key, created if new (trigger.dev's
    RunTaskService). With `Trigger-Version: 2023-09-29` the answer is `{task, cachedTasks}`,
    the next page of completed tasks when `X-Cached-Tasks-Cursor` is given."""
    if not idempotency_key:
        raise HTTPException(400, "missing Idempotency-Key header")
    new = NewTask(
        idempotency_key=idempotency_key,
        name=body.name,
        display_key=body.display_key,
        icon=body.icon,
        description=body.description,
        noop=body.noop,
        params=body.params,
        properties=body.properties,
        style=body.style,
        delay_until=body.delay_until,
        operation=body.operation,
        parent_id=body.parent_id,
        parallel=body.parallel,
        callback=body.callback is not None and body.callback.enabled,
    )
    try:
        task = await jobs.tasks.run_task(env, run_id, new)
    except TaskError as exc:
        raise HTTPException(400, str(exc)) from None
    if task is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    if trigger_version != LAZY_LOADED_CACHED_TASKS:
        return ServerTask.of(task)
    cache = await jobs.tasks.cache_page(run_id, cursor) if cursor else None
    response.headers["trigger-version"] = LAZY_LOADED_CACHED_TASKS
    return TaskAnswer.of(task, cache)


@router.post("/{run_id}/tasks/{task_id}/complete", responses=documented(*AUTHED, 404))
async def complete_task(
    run_id: PathId,
    task_id: PathId,
    body: CompleteTaskBody,
    env: Env,
    jobs: Jobs,
    trigger_version: TriggerVersion = None,
) -> ServerTask:
    """COMPLETED with its output (a JSON string with `Trigger-Version: 2023-11-01`); a
    finished task is returned as it is."""
    output = body.output
    if trigger_version == SERIALIZED_TASK_OUTPUT:
        if output is not None and not isinstance(output, str):
            raise HTTPException(400, "output must be a JSON string with Trigger-Version 2023-11-01")
        try:
            output = parse_output(output)
        except TaskError as exc:
            raise HTTPException(400, str(exc)) from None
    task = await jobs.tasks.complete_task(env, run_id, task_id, output, body.properties)
    return ServerTask.of(found_task(task, run_id, task_id))


@router.post("/{run_id}/tasks/{task_id}/fail", responses=documented(*AUTHED, 404))
async def fail_task(
    run_id: PathId, task_id: PathId, body: FailTaskBody, env: Env, jobs: Jobs
) -> ServerTask:
    """ERRORED with the error; a finished task is returned as it is."""
    error = body.error.model_dump(exclude_none=True)
    task = await jobs.tasks.fail_task(env, run_id, task_id, error)
    return ServerTask.of(found_task(task, run_id, task_id))


@v2.get("/{run_id}", responses=documented(*AUTHED, 404))
async def get_run_v2(
    run_id: PathId,
    env: Env,
    jobs: Jobs,
    take: Annotated[int, Query(ge=1)] = 20,
    cursor: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    subtasks: bool = False,
) -> RunV2:
    """The run as trigger.dev's `client.getRun` reads it: its top-level tasks, `take` at a
    time (at most 50) from `cursor`, each with its subtasks if asked for."""
    run = await found_run(jobs, env, run_id)
    return RunV2.of(run, take=min(take, 50), cursor=cursor, subtasks=subtasks)


@v2.get("/{run_id}/statuses", responses=documented(*AUTHED, 404))
async def get_run_statuses_v2(run_id: PathId, env: Env, jobs: Jobs) -> RunStatusesV2:
    """The run's io statuses, as trigger.dev's `client.getRunStatuses` reads them (its status
    history is `GET /api/v1/runs/{id}/history`)."""
    return RunStatusesV2.of(await found_run(jobs, env, run_id))


async def found_run(jobs: JobsService, env: Environment, run_id: str) -> Run:
    run = await jobs.runs.get_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return run


def found_task(task: Task | None, run_id: str, task_id: str) -> Task:
    if task is None:
        raise HTTPException(404, f"run {run_id!r} has no task {task_id!r}")
    return task
