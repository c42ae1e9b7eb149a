"""The engine's pages: the overview (queues, throughput, workers), jobs (a filtered list, one
job, actions on one job or on every job the filter matches), queues and cron."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kongflow.dashboard.app import guarded, query_filter, render, url
from kongflow.dashboard.queries import COUNT_CAP, JOB_STATES, EngineReads, JobFilter, ServiceReads
from kongflow.dashboard.security import form
from kongflow.engine.client import Client
from kongflow.engine.errors import KongflowError

ACTIONS = ("retry", "cancel", "delete", "run-now")
MAX_FILTER_LENGTH = 512


def _engine(request: Request) -> EngineReads:
    reads: EngineReads = request.app.state.engine
    return reads


def _client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


async def overview(request: Request) -> Response:
    return render(request, "overview.html", **await _overview(request))


async def overview_fragment(request: Request) -> Response:
    return render(request, "overview_live.html", **await _overview(request))


async def _overview(request: Request) -> dict[str, Any]:
    reads = _engine(request)
    throughput = await reads.throughput()
    peak = max((row["completed"] + row["failed"] for row in throughput), default=0)
    return {
        "queues": await reads.queues(),
        "throughput": throughput,
        "peak": peak,
        "workers": await reads.workers(),
    }


def job_filter(request: Request) -> JobFilter:
    """The list's filter from the query string; a malformed one is a 400 page saying why."""
    values, state = query_filter(request, MAX_FILTER_LENGTH, "state", JOB_STATES)
    before = values.get("before")
    if before is not None and not before.isdigit():
        raise HTTPException(400, "`before` is a job id (a whole number)")
    return JobFilter(
        state=state,
        task=values.get("task"),
        queue=values.get("queue"),
        search=values.get("q"),
        before=int(before) if before else None,
    )


async def jobs(request: Request) -> Response:
    where = job_filter(request)
    page = await _engine(request).jobs(where)
    return render(
        request,
        "jobs.html",
        filter=where,
        page=page,
        states=JOB_STATES,
        tasks=await _engine(request).task_names(),
        next_query=urlencode(where.query(before=page.next_before)) if page.next_before else None,
        filter_query=urlencode(where.query(before=None)),
    )


def _job_id(request: Request) -> int:
    raw = request.path_params["job_id"]
    if not raw.isdigit() or len(raw) > 19:
        raise HTTPException(404, f"no job {raw!r}")
    return int(raw)


async def job(request: Request) -> Response:
    job_id = _job_id(request)
    found = await _engine(request).job(job_id)
    if found is None:
        raise HTTPException(404, f"no job {job_id}: it does not exist, or was cleaned up")
    return render(request, "job.html", job=found, actions=ACTIONS)


async def job_action(request: Request) -> Response:
    job_id = _job_id(request)
    fields = await form(request)
    action = request.path_params["action"]
    if action == "reschedule":
        changed = await _reschedule(_client(request), job_id, fields.get("run_at", ""))
    else:
        changed = await _act(_client(request), action, [job_id])
    if action == "delete" and changed:
        return RedirectResponse(url(request, "/jobs"), 303)
    done = f"{action}: done" if changed else f"{action}: not possible in the job's state"
    return RedirectResponse(url(request, f"/jobs/{job_id}?{urlencode({'done': done})}"), 303)


async def _reschedule(client: Client, job_id: int, when: str) -> int:
    """Run the job at `when`: a date and time in UTC, as a datetime-local field sends it."""
    try:
        run_at = datetime.fromisoformat(when).replace(tzinfo=UTC)
    except ValueError:
        raise HTTPException(
            400, f"{when!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)"
        ) from None
    return len(await client.reschedule_jobs([job_id], run_at=run_at))


async def _act(client: Client, action: str, ids: list[int]) -> int:
    """Apply an action to jobs; how many it changed."""
    try:
        if action == "retry":
            return sum([await client.retry_job(i) is not None for i in ids])
        if action == "cancel":
            return sum([await client.cancel_job(i) is not None for i in ids])
        if action == "delete":
            return len(await client.delete_jobs(ids))
        if action == "run-now":
            return len(await client.reschedule_jobs(ids, run_at=datetime.now(UTC)))
    except KongflowError as exc:
        raise HTTPException(409, str(exc)) from None
    raise HTTPException(404, f"no action {action!r}: one of {', '.join(ACTIONS)}")


async def bulk_confirm(request: Request) -> Response:
    """How many jobs the filter matches, before acting on them all."""
    where = job_filter(request)
    action = request.query_params.get("action", "")
    if action not in ACTIONS:
        raise HTTPException(400, f"no action {action!r}: one of {', '.join(ACTIONS)}")
    ids = await _engine(request).matching_ids(where)
    return render(
        request,
        "bulk.html",
        action=action,
        count=len(ids),
        capped=len(ids) >= COUNT_CAP,
        filter=where,
        filter_query=urlencode(where.query(before=None)),
    )


async def bulk(request: Request) -> Response:
    fields = await form(request)
    where = job_filter(request)
    action = fields.get("action", "")
    if action not in ACTIONS:
        raise HTTPException(400, f"no action {action!r}: one of {', '.join(ACTIONS)}")
    ids = await _engine(request).matching_ids(where)
    changed = await _act(_client(request), action, ids)
    query = urlencode(where.query(before=None) | {"done": f"{action}: {changed}"})
    return RedirectResponse(url(request, f"/jobs?{query}"), 303)


async def queues(request: Request) -> Response:
    return render(request, "queues.html", queues=await _engine(request).queues())


async def queue_action(request: Request) -> Response:
    fields = await form(request)
    name = fields.get("queue", "")
    client = _client(request)
    if not name or not await client.queue_known(name):
        raise HTTPException(404, f"no queue {name!r}")
    action = request.path_params["action"]
    if action == "pause":
        await client.pause_queue(name)
    elif action == "resume":
        await client.resume_queue(name)
    elif action == "limit":
        raw = fields.get("limit", "")
        if not raw.isdigit() or not 1 <= int(raw) <= 2**31 - 1:
            raise HTTPException(400, "a queue's limit is a whole number of jobs, at least 1")
        await client.set_queue_limits({name: int(raw)})
    else:
        raise HTTPException(404, f"no queue action {action!r}")
    return RedirectResponse(url(request, "/queues"), 303)


async def cron(request: Request) -> Response:
    service: ServiceReads | None = request.app.state.service
    schedules = await service.schedules(None) if service is not None else []
    return render(request, "cron.html", items=await _engine(request).cron(), schedules=schedules)


def routes() -> list[Route]:
    return [
        Route("/", guarded(overview)),
        Route("/fragments/overview", guarded(overview_fragment)),
        Route("/jobs", guarded(jobs)),
        Route("/jobs/bulk", guarded(bulk_confirm), methods=["GET"]),
        Route("/jobs/bulk", guarded(bulk), methods=["POST"]),
        Route("/jobs/{job_id}", guarded(job)),
        Route("/jobs/{job_id}/{action}", guarded(job_action), methods=["POST"]),
        Route("/queues", guarded(queues)),
        Route("/queues/{action}", guarded(queue_action), methods=["POST"]),
        Route("/cron", guarded(cron)),
    ]
