"""An endpoint: the jobs a program defines, served over trigger.dev v2's endpoint protocol
(TriggerClient.handleRequest) so the jobs service can index and run them."""

from __future__ import annotations

import hmac
import inspect
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
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
    ErrorWithStack,
    EventSpecification,
    IndexEndpointResponse,
    JobMetadata,
    PingResponse,
    RunJobBody,
    RunJobError,
    RunJobInvalidPayload,
    RunJobSuccess,
    SchemaError,
    Wire,
)
from kongflow.sdk.context import IO, Context

JobRun = Callable[[Any, IO, Context], Awaitable[Any]]
R = TypeVar("R", bound=JobRun)

#: Every method reaches the handler, so that a wrong one gets trigger.dev's 405 (after auth).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class EventTrigger:
    """Run a job when an event named `name` from `source` arrives (trigger.dev's eventTrigger).

    `schema` (a pydantic model, or any type pydantic validates) parses the payload before the
    job sees it; without one the payload is passed as sent. `filter` narrows the events by
    payload (each leaf a list of accepted values)."""

    name: str
    schema: type[Any] | None = None
    source: str = "trigger.dev"
    filter: dict[str, Any] | None = None
    title: str | None = None
    _adapter: TypeAdapter[Any] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        adapter = TypeAdapter(self.schema) if self.schema is not None else None
        object.__setattr__(self, "_adapter", adapter)

    def specification(self) -> EventSpecification:
        return EventSpecification(
            name=self.name,
            title=self.title or self.name,
            source=self.source,
            icon="custom-event",
            filter=self.filter,
        )

    def metadata(self) -> dict[str, Any]:
        """The static trigger as INDEX_ENDPOINT describes it."""
        rule: dict[str, Any] = {"event": self.name, "source": self.source}
        if self.filter is not None:
            rule["payload"] = self.filter
        return {"type": "static", "title": self.name, "rule": rule}

    def parse(self, payload: Any) -> Any:
        """The payload as the job receives it; raises ValidationError. An event sent without
        a payload is validated as `{}`, so a model whose fields all have defaults accepts it."""
        if self._adapter is None:
            return payload
        try:
            return self._adapter.validate_python(payload)
        except ValidationError:
            if payload is not None:
                raise
            return self._adapter.validate_python({})


def event_trigger(
    name: str,
    *,
    schema: type[Any] | None = None,
    source: str = "trigger.dev",
    filter: dict[str, Any] | None = None,
    title: str | None = None,
) -> EventTrigger:
    return EventTrigger(name=name, schema=schema, source=source, filter=filter, title=title)


@dataclass(frozen=True)
class Job:
    """A job as registered on an endpoint: its metadata and the function that runs it."""

    id: str
    name: str
    version: str
    trigger: EventTrigger
    run: JobRun
    enabled: bool = True

    def __post_init__(self) -> None:
        if not inspect.iscoroutinefunction(self.run):
            raise TypeError(f"job {self.id!r}: its run function must be `async def`")

    def metadata(self) -> JobMetadata:
        return JobMetadata(
            id=self.id,
            name=self.name,
            version=self.version,
            event=self.trigger.specification(),
            trigger=self.trigger.metadata(),
            enabled=self.enabled,
        )


def _json(status: int, body: Wire | dict[str, Any]) -> JSONResponse:
    return JSONResponse(body.wire() if isinstance(body, Wire) else body, status_code=status)


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


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (an unknown path) answer in JSON too."""
    assert isinstance(exc, HTTPException)
    return _message(exc.status_code, exc.detail)


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


class Endpoint:
    """The jobs one program serves (trigger.dev's TriggerClient).

    `id` is the endpoint's slug, as registered with the jobs service; `api_key` is the
    environment's key, which the service sends with every request. Serve `endpoint.app` (an
    ASGI app answering POST at its root) or call `handle_request` from your own route."""

    def __init__(self, id: str, api_key: str) -> None:
        if not id:
            raise ValueError("an endpoint needs an id (its slug in the jobs service)")
        if not api_key:
            raise ValueError("an endpoint needs the api_key of its environment")
        self.id = id
        self._api_key = api_key.encode()
        self._jobs: dict[str, Job] = {}
        self.app = Starlette(
            routes=[Route("/", self.handle_request, methods=_METHODS)],
            exception_handlers={HTTPException: _http_error},
        )

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
        trigger: EventTrigger,
        enabled: bool = True,
    ) -> Callable[[R], R]:
        """Register `async def run(payload, io, ctx)` as a job; it returns the job's output
        (JSON-serialisable; pydantic models are dumped)."""

        def register(run: R) -> R:
            self.add(
                Job(id=id, name=name, version=version, trigger=trigger, run=run, enabled=enabled)
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
            return await self._execute(await request.body())
        return _message(
            400,
            f"Unknown x-trigger-action {action!r}: expected PING, INDEX_ENDPOINT or EXECUTE_JOB",
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

    async def _execute(self, raw: bytes) -> Response:
        try:
            body = RunJobBody.model_validate_json(raw)
        except ValidationError:  # malformed JSON is a ValidationError too
            return _message(400, "Invalid execution")
        job = self._jobs.get(body.job.id)
        if job is None:
            return _message(404, "Job not found")
        return _json(200, await self.execute(job, body))

    async def execute(
        self, job: Job, body: RunJobBody
    ) -> RunJobSuccess | RunJobError | RunJobInvalidPayload:
        """Run `job` for `body`; whatever happens is an answer, never an exception."""
        try:
            payload = job.trigger.parse(body.event.payload)
        except ValidationError as exc:
            errors = [SchemaError(path=_path(e["loc"]), message=e["msg"]) for e in exc.errors()]
            return RunJobInvalidPayload(status="INVALID_PAYLOAD", errors=errors)
        ctx = Context.from_body(body)
        try:
            output = await job.run(payload, IO(ctx), ctx)
        except Exception as exc:
            return _error(exc)
        try:
            jsonable = to_jsonable_python(output, by_alias=True, inf_nan_mode="null")
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            return _error(exc, f"the output of job {job.id!r} is not JSON-serialisable: {exc}")
        return RunJobSuccess(status="SUCCESS", output=jsonable)
