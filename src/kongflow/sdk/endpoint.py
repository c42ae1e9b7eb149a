"""An endpoint: the jobs a program defines, served over trigger.dev v2's endpoint protocol
(TriggerClient.handleRequest) so the jobs service can index and run them."""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kongflow.protocol import (
    ACTION_HEADER,
    API_KEY_HEADER,
    ENDPOINT_ID_HEADER,
    LAZY_LOADED_CACHED_TASKS,
    RUN_METADATA_HEADER,
    VERSION_HEADER,
    ErrorWithStack,
    IndexEndpointResponse,
    JobMetadata,
    PingResponse,
    RunJobBody,
    RunJobError,
    RunJobFlow,
    RunJobInvalidPayload,
    RunJobSuccess,
    SchemaError,
    Wire,
)
from kongflow.sdk.api import ApiClient, api_url_from_env, new_http_client
from kongflow.sdk.context import IO, Context
from kongflow.sdk.flow import ControlFlow, task_state
from kongflow.sdk.io import TaskError, describe_error
from kongflow.sdk.store import EndpointStores
from kongflow.sdk.triggers import Trigger

JobRun = Callable[[Any, IO, Context], Awaitable[Any]]
#: on_success / on_failure: called with trigger.dev's run notification (`id`, `ok`, `status`,
#: `output` or `error`, `job`, ...) when a run of the job ends.
RunHook = Callable[[dict[str, Any]], Awaitable[None]]
R = TypeVar("R", bound=JobRun)
RunJobAnswer = RunJobSuccess | RunJobError | RunJobInvalidPayload | RunJobFlow

log = logging.getLogger("kongflow.sdk")

#: Every method reaches the handler, so that a wrong one gets trigger.dev's 405 (after auth).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class Job:
    """A job as registered on an endpoint: its metadata and the function that runs it."""

    id: str
    name: str
    version: str
    trigger: Trigger
    run: JobRun
    enabled: bool = True
    on_success: RunHook | None = None
    on_failure: RunHook | None = None

    def __post_init__(self) -> None:
        if not inspect.iscoroutinefunction(self.run):
            raise TypeError(f"job {self.id!r}: its run function must be `async def`")
        for name in ("on_success", "on_failure"):
            hook = getattr(self, name)
            if hook is not None and not inspect.iscoroutinefunction(hook):
                raise TypeError(f"job {self.id!r}: {name} must be `async def`")

    def run_metadata(self) -> dict[str, bool]:
        """Which ends of its runs the job wants to hear of (`x-trigger-run-metadata`)."""
        metadata: dict[str, bool] = {}
        if self.on_success is not None:
            metadata["successSubscription"] = True
        if self.on_failure is not None:
            metadata["failedSubscription"] = True
        return metadata

    def metadata(self) -> JobMetadata:
        return JobMetadata(
            id=self.id,
            name=self.name,
            version=self.version,
            event=self.trigger.specification(),
            trigger=self.trigger.metadata(),
            enabled=self.enabled,
        )


def _json(
    status: int, body: Wire | dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        body.wire() if isinstance(body, Wire) else body, status_code=status, headers=headers
    )


def _message(status: int, message: str) -> JSONResponse:
    return _json(status, {"message": message})


def _error(exc: BaseException, message: str | None = None) -> RunJobError:
    return RunJobError(
        status="ERROR",
        error=ErrorWithStack(
            message=message or str(exc),
            name=type(exc).__name__,
            stack="".join(traceback.format_exception(exc)),
        ),
    )


def _first_flow(group: BaseExceptionGroup[BaseException]) -> ControlFlow | None:
    """The first ControlFlow in an exception group (a TaskGroup of tasks, say)."""
    for exc in group.exceptions:
        if isinstance(exc, ControlFlow):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_flow(exc)
            if found is not None:
                return found
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (an unknown path) answer in JSON too."""
    assert isinstance(exc, HTTPException)
    return _message(exc.status_code, exc.detail)


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


class Endpoint:
    """The jobs one program serves (trigger.dev's TriggerClient).

    `id` is the endpoint's slug, as registered with the jobs service; `api_key` is the
    environment's key, which the service sends with every request and io uses to call the
    API at `api_url` (by default KONGFLOW_API_URL, else TRIGGER_API_URL). Serve
    `endpoint.app` (an ASGI app answering POST at its root) or call `handle_request` from
    your own route. `endpoint.store.env` is the environment's key-value store, outside runs."""

    def __init__(self, id: str, api_key: str, *, api_url: str | None = None) -> None:
        if not id:
            raise ValueError("an endpoint needs an id (its slug in the jobs service)")
        if not api_key:
            raise ValueError("an endpoint needs the api_key of its environment")
        self.id = id
        self.api_url = (api_url or api_url_from_env() or "").rstrip("/") or None
        self._api_key_text = api_key
        self._api_key = api_key.encode()
        self._jobs: dict[str, Job] = {}
        self._http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self.store = EndpointStores(self.api_client)
        self.app = Starlette(
            routes=[Route("/", self.handle_request, methods=_METHODS)],
            exception_handlers={HTTPException: _http_error},
            lifespan=self._lifespan,
        )

    def api_client(self) -> ApiClient:
        """A client of the API (close it with `aclose()`, or use it as a context), sending
        through the endpoint's one HTTP client of this event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside a loop: a client of its own, made when first used
            return ApiClient(self.api_url, self._api_key_text)
        if self._http is None or self._http[0] is not loop:
            self._http = (loop, new_http_client())  # a client is bound to its loop
        return ApiClient(self.api_url, self._api_key_text, http=self._http[1])

    async def aclose(self) -> None:
        """Close the shared HTTP client (`endpoint.app` does at shutdown)."""
        if self._http is not None:
            _, http = self._http
            self._http = None
            await http.aclose()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.aclose()

    @property
    def jobs(self) -> Mapping[str, Job]:
        """The registered jobs by id (read-only)."""
        return MappingProxyType(self._jobs)

    def job(
        self,
        *,
        id: str,
        name: str,
        version: str,
        trigger: Trigger,
        enabled: bool = True,
        on_success: RunHook | None = None,
        on_failure: RunHook | None = None,
    ) -> Callable[[R], R]:
        """Register `async def run(payload, io, ctx)` as a job; it returns the job's output
        (JSON-serialisable; pydantic models are dumped). `on_success` and `on_failure`
        (`async def hook(notification: dict)`) are called when one of its runs ends."""

        def register(run: R) -> R:
            self.add(
                Job(
                    id=id,
                    name=name,
                    version=version,
                    trigger=trigger,
                    run=run,
                    enabled=enabled,
                    on_success=on_success,
                    on_failure=on_failure,
                )
            )
            return run

        return register

    def add(self, job: Job) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id!r} is already defined on endpoint {self.id!r}")
        job.metadata()  # an invalid id or version fails here rather than at indexing
        self._jobs[job.id] = job

    # -- the protocol ---------------------------------------------------------------------------

    async def handle_request(self, request: Request) -> Response:
        """Answer one request from the jobs service (trigger.dev's handleRequest, same order:
        auth, method, action)."""
        given = request.headers.get(API_KEY_HEADER)
        if not given:
            return _message(401, "Unauthorized: missing x-trigger-api-key header")
        if not hmac.compare_digest(given.encode(), self._api_key):
            return _message(
                401,
                "Forbidden: client apiKey mismatch: Make sure you are using the correct API Key "
                "for your environment",
            )
        if request.method != "POST":
            return _message(405, "Method not allowed (only POST is allowed)")
        action = request.headers.get(ACTION_HEADER)
        if not action:
            return _message(400, "Missing x-trigger-action header")
        if action == "PING":
            return self._ping(request.headers.get(ENDPOINT_ID_HEADER))
        if action == "INDEX_ENDPOINT":
            return _json(200, self.index())
        if action == "EXECUTE_JOB":
            return await self._execute(await request.body(), request.headers.get(VERSION_HEADER))
        if action == "RUN_NOTIFICATION":
            return await self._notify(await request.body())
        return _message(
            400,
            f"Unknown x-trigger-action {action!r}: expected PING, INDEX_ENDPOINT, EXECUTE_JOB "
            "or RUN_NOTIFICATION",
        )

    def index(self) -> IndexEndpointResponse:
        return IndexEndpointResponse(jobs=[job.metadata() for job in self._jobs.values()])

    def _ping(self, endpoint_id: str | None) -> Response:
        if not endpoint_id:
            return _json(200, PingResponse(ok=False, error="Missing endpoint ID"))
        if endpoint_id != self.id:
            error = f"Endpoint ID mismatch error. Expected {self.id}, got {endpoint_id}"
            return _json(200, PingResponse(ok=False, error=error))
        return _json(200, PingResponse(ok=True))

    async def _execute(self, raw: bytes, server_version: str | None = None) -> Response:
        started = time.monotonic()
        try:
            body = RunJobBody.model_validate_json(raw)
        except ValidationError:  # malformed JSON is a ValidationError too
            return _message(400, "Invalid execution")
        job = self._jobs.get(body.job.id)
        if job is None:
            return _message(404, "Job not found")
        answer = await self.execute(job, body, server_version=server_version, started=started)
        headers = {
            "Trigger-Version": LAZY_LOADED_CACHED_TASKS,
            RUN_METADATA_HEADER: json.dumps(job.run_metadata(), separators=(",", ":")),
        }
        return _json(200, answer, headers)

    async def execute(
        self,
        job: Job,
        body: RunJobBody,
        *,
        server_version: str | None = None,
        started: float | None = None,
    ) -> RunJobAnswer:
        """Run `job` for `body`; whatever happens is an answer, never an exception. `started`
        (time.monotonic()) is when the request came, from which the execution's time limit
        (`runChunkExecutionLimit`) counts."""
        started = time.monotonic() if started is None else started
        try:
            payload = job.trigger.parse(body.event.payload)
        except ValidationError as exc:
            errors = [SchemaError(path=_path(e["loc"]), message=e["msg"]) for e in exc.errors()]
            return RunJobInvalidPayload(status="INVALID_PAYLOAD", errors=errors)
        ctx = Context.from_body(body)
        async with self.api_client() as api:
            io = IO(ctx, api, body=body, server_version=server_version, time_origin=started)
            return await self._run(job, payload, io, ctx)

    async def _run(self, job: Job, payload: Any, io: IO, ctx: Context) -> RunJobAnswer:
        try:
            output = await job.run(payload, io, ctx)
            await io.flush()
        except ControlFlow as flow:
            return flow.answer()
        except Exception as exc:
            return await self._failed(io, exc)
        except BaseExceptionGroup as group:
            first = _first_flow(group)
            if first is None:
                raise
            return first.answer()
        try:
            jsonable = to_jsonable_python(output, by_alias=True, inf_nan_mode="null")
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            return _error(exc, f"the output of job {job.id!r} is not JSON-serialisable: {exc}")
        return RunJobSuccess(status="SUCCESS", output=jsonable)

    async def _failed(self, io: IO, exc: Exception) -> RunJobAnswer:
        """The ERROR answer for what the job raised, with the task it failed if any (the log
        lines not yet recorded are recorded first, if they can be)."""
        try:
            await io.flush(quiet=True)
        except ControlFlow as flow:  # e.g. the run was cancelled meanwhile
            return flow.answer()
        if isinstance(exc, TaskError):
            return RunJobError(status="ERROR", error=exc.error, task=task_state(exc.task))
        failed = io.failed_task(exc)
        return RunJobError(
            status="ERROR",
            error=describe_error(exc),
            task=task_state(failed) if failed is not None else None,
        )

    async def _notify(self, raw: bytes) -> Response:
        """RUN_NOTIFICATION: a run of one of the jobs ended; call its hook."""
        try:
            notification = json.loads(raw)
        except ValueError:
            return _message(400, "Invalid run notification")
        job_ref = notification.get("job") if isinstance(notification, dict) else None
        job_id = job_ref.get("id") if isinstance(job_ref, dict) else None
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            return _message(404, "Job not found")
        ok = notification.get("ok") is True
        hook = job.on_success if ok else job.on_failure
        if hook is not None:
            try:
                await hook(notification)
            except Exception as exc:
                which = "on_success" if ok else "on_failure"
                log.exception("job %s: %s raised", job.id, which)
                return _message(500, f"the {which} hook of job {job.id!r} raised: {exc!r}")
        return _json(200, {"ok": True}, {"Trigger-Version": LAZY_LOADED_CACHED_TASKS})
