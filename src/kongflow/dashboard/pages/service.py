"""The jobs service's pages: environments with their endpoints and the jobs each indexed, runs
by job and status, a run (timeline, output, tasks as a tree, deliveries; cancel), and Test a
job as trigger.dev's Test tab does. A viewer logged in with an environment's API key sees that
environment only."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from kongflow.dashboard.app import guarded, query_filter, render, url, viewer_of
from kongflow.dashboard.queries import RUN_STATUSES, RunFilter, ServiceReads
from kongflow.dashboard.security import form
from kongflow.service.environments import Environment
from kongflow.service.runs import JobNotFoundError
from kongflow.service.service import JobsService

MAX_ID_LENGTH = 256


def _jobs(request: Request) -> JobsService:
    jobs: JobsService = request.app.state.jobs
    return jobs


def _reads(request: Request) -> ServiceReads:
    reads: ServiceReads = request.app.state.service
    return reads


def _scope(request: Request) -> str | None:
    """The environment the viewer may see (None: all)."""
    return viewer_of(request).environment_id


async def environments(request: Request) -> Response:
    scope = _scope(request)
    reads = _reads(request)
    versions = await reads.versions(scope)
    by_endpoint: dict[str, list[dict[str, Any]]] = {}
    for version in versions:
        by_endpoint.setdefault(version["endpoint_id"], []).append(version)
    return render(
        request,
        "service.html",
        environments=await reads.environments(scope),
        endpoints=await reads.endpoints(scope),
        versions=by_endpoint,
    )


def _run_filter(request: Request) -> RunFilter:
    values, status = query_filter(request, MAX_ID_LENGTH, "status", RUN_STATUSES)
    return RunFilter(
        environment_id=_scope(request),
        job=values.get("job"),
        status=status,
        before=values.get("before"),
    )


async def runs(request: Request) -> Response:
    where = _run_filter(request)
    found, next_before = await _reads(request).runs(where)
    return render(
        request,
        "runs.html",
        runs=found,
        filter=where,
        statuses=RUN_STATUSES,
        next_query=urlencode(where.query(before=next_before)) if next_before else None,
    )


async def _environment_of_run(request: Request, run_id: str) -> Environment:
    """The run's environment, if the viewer may see it; else a 404 (as if there were none)."""
    if len(run_id) > MAX_ID_LENGTH:
        raise HTTPException(404, "no such run")
    environment_id = await _reads(request).run_environment(run_id)
    scope = _scope(request)
    if environment_id is None or (scope is not None and environment_id != scope):
        raise HTTPException(404, f"no run {run_id!r}")
    environment = await _jobs(request).environments.by_id(environment_id)
    if environment is None:
        raise HTTPException(404, f"no run {run_id!r}")
    return environment


async def _run_context(request: Request) -> dict[str, Any]:
    run_id = request.path_params["run_id"]
    environment = await _environment_of_run(request, run_id)
    run = await _jobs(request).runs.get_run(environment, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r}")
    reads = _reads(request)
    tasks = await reads.tasks(run_id)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for task in tasks:
        children.setdefault(task["parent_id"], []).append(task)
    return {
        "run": run,
        "environment": environment,
        "children": children,
        "deliveries": [
            d | {"target": _shown_url(d["url"])} for d in await reads.subscriptions(run_id)
        ],
    }


def _shown_url(raw: str) -> str:
    """A delivery's target without its query string (which may carry a token)."""
    parts = urlsplit(raw)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def run(request: Request) -> Response:
    return render(request, "run.html", **await _run_context(request))


async def run_fragment(request: Request) -> Response:
    return render(request, "run_live.html", **await _run_context(request))


async def cancel_run(request: Request) -> Response:
    await form(request)
    run_id = request.path_params["run_id"]
    environment = await _environment_of_run(request, run_id)
    await _jobs(request).runs.cancel_run(environment, run_id)
    return RedirectResponse(url(request, f"/runs/{run_id}?done=cancelled"), 303)


def _choice(target: dict[str, Any]) -> str:
    """A testable job as the Test page's select names it: its environment and its slug."""
    return f"{target['environment_id']}|{target['job']}"


def _test_form(
    request: Request, testable: list[dict[str, Any]], chosen: str | None, **context: Any
) -> Response:
    examples = {_choice(t): json.dumps(t["example"] or {}, indent=2) for t in testable}
    if chosen is not None and chosen not in examples:  # ?job=<slug>: its first environment
        chosen = next((_choice(t) for t in testable if t["job"] == chosen), None)
    return render(
        request,
        "test.html",
        context.pop("status", 200),
        testable=[t | {"choice": _choice(t)} for t in testable],
        chosen=chosen,
        examples=examples,
        **({"error": None, "payload": None} | context),
    )


async def test_page(request: Request) -> Response:
    testable = await _reads(request).testable(_scope(request))
    return _test_form(request, testable, request.query_params.get("job"))


async def test_job(request: Request) -> Response:
    fields = await form(request)
    chosen, raw = fields.get("job", ""), fields.get("payload", "") or "{}"
    testable = await _reads(request).testable(_scope(request))
    target = next((t for t in testable if _choice(t) == chosen), None)

    def again(error: str) -> Response:
        return _test_form(request, testable, chosen, status=400, error=error, payload=raw)

    if target is None:
        return again("no such job to test here")
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        return again(f"the payload is not JSON: {exc}")
    environment = await _jobs(request).environments.by_id(target["environment_id"])
    if environment is None:
        return again("the job's environment is gone")
    try:
        queued = await _jobs(request).runs.test_job(environment, target["job"], payload)
    except JobNotFoundError as exc:
        return again(str(exc))
    return RedirectResponse(url(request, f"/runs/{queued.run_id}"), 303)


def routes() -> list[Route]:
    return [
        Route("/service", guarded(environments, admin=False)),
        Route("/runs", guarded(runs, admin=False)),
        Route("/runs/{run_id}", guarded(run, admin=False)),
        Route("/fragments/runs/{run_id}", guarded(run_fragment, admin=False)),
        Route("/runs/{run_id}/cancel", guarded(cancel_run, admin=False), methods=["POST"]),
        Route("/test", guarded(test_page, admin=False), methods=["GET"]),
        Route("/test", guarded(test_job, admin=False), methods=["POST"]),
    ]
