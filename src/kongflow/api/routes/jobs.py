"""Jobs tested and invoked (`POST /api/v1/jobs/{job}/test`, `.../invoke`), and their runs
listed (`GET .../runs`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import MAX_ID_LENGTH, InvokeBody, PathId, TestJobBody
from kongflow.api.responses import ListedRun, QueuedRun, RunsPage
from kongflow.service.runs import IdempotencyKeyReused, JobNotFoundError

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post("/{job_slug}/test", status_code=202, responses=documented(*AUTHED, 404))
async def submit_test(
    job_slug: PathId, env: Env, jobs: Jobs, body: TestJobBody | None = None
) -> QueuedRun:
    """Test a job: a test event and a run, queued at once."""
    try:
        queued = await jobs.runs.test_job(env, job_slug, (body or TestJobBody()).payload)
    except JobNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    return QueuedRun.of(queued)


@router.post("/{job_slug}/invoke", responses=documented(*AUTHED, 404, 409))
async def invoke_job(
    job_slug: PathId,
    env: Env,
    jobs: Jobs,
    body: InvokeBody | None = None,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=MAX_ID_LENGTH)] = None,
) -> QueuedRun:
    """Invoke a job; a repeated `idempotency-key` returns the first run. Always 200, as
    trigger.dev's SDK retries any other success status (each retry would be a new run)."""
    body = body or InvokeBody()
    try:
        queued, _ = await jobs.runs.invoke(
            env,
            job_slug,
            body.payload,
            context=body.context,
            idempotency_key=idempotency_key,
            callback_url=body.options.callback_url,
        )
    except JobNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except IdempotencyKeyReused as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:  # a callback URL the network policy refuses
        raise HTTPException(400, str(exc)) from None
    return QueuedRun.of(queued)


@router.get(
    "/{job_slug}/runs",
    responses=documented(*AUTHED, 404),
    response_model_exclude_unset=True,  # no nextCursor on the last page: the SDK wants none
)
async def list_runs(
    job_slug: PathId,
    env: Env,
    jobs: Jobs,
    cursor: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    take: Annotated[int, Query(ge=1, le=50)] = 20,
) -> RunsPage:
    """The job's runs in this environment, newest first (trigger.dev's `client.getRuns`)."""
    try:
        runs, next_cursor = await jobs.runs.list_runs(env, job_slug, cursor=cursor, take=take)
    except JobNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    page = RunsPage(runs=[ListedRun.of(r) for r in runs])
    if next_cursor is not None:
        page.next_cursor = next_cursor
    return page
