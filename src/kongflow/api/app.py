"""The HTTP API: jobs tested and invoked, runs read and cancelled, events sent, endpoints
registered. Every route but /health is authenticated by `Authorization: Bearer <environment
API key>`; a run, job or endpoint of another environment is answered 404, as if it did not
exist. Errors are JSON `{"error": "..."}` with a status that says whose fault it is."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolTimeout
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    model_validator,
)
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException as StarletteHTTPException

from kongflow.api.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, RequestGuard, database_unavailable
from kongflow.jobs.endpoint_api import EndpointError
from kongflow.jobs.environments import Environment, check_slug
from kongflow.jobs.runs import (
    TERMINAL,
    IdempotencyKeyReused,
    JobNotFoundError,
    NewEvent,
    QueuedRun,
)
from kongflow.jobs.service import JobsService
from kongflow.protocol import iso_time

MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_ID_LENGTH = 256  # event ids, idempotency keys, names, sources, path ids
MAX_URL_LENGTH = 2048


def _http_url(value: str) -> str:
    """An http(s) URL, kept exactly as given (pydantic's URL type would rewrite it)."""
    _URL.validate_python(value)
    return value


_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
HttpUrl = Annotated[str, Field(max_length=MAX_URL_LENGTH), AfterValidator(_http_url)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
PathId = Annotated[str, Path(max_length=MAX_ID_LENGTH)]


log = logging.getLogger("kongflow.api")


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TestJobBody(Body):
    payload: dict[str, Any] = Field(default_factory=dict)


class InvokeOptions(Body):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    callback_url: HttpUrl | None = None


class InvokeBody(Body):
    payload: Any = Field(default_factory=dict)
    context: Any = None
    options: InvokeOptions = Field(default_factory=InvokeOptions)


class EventBody(Body):
    name: Identifier
    payload: Any = None
    context: Any = None
    id: Identifier | None = None
    source: Identifier = "trigger.dev"
    timestamp: datetime | None = None


def _epoch_ms(value: Any) -> Any:
    """Milliseconds since the epoch become a date; an ISO-8601 string goes on to be parsed."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("milliseconds since the epoch out of range") from None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return value
    raise ValueError("must be an ISO-8601 date string or whole milliseconds since the epoch")


def _within_a_year(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError("an ISO-8601 date must include its time zone (e.g. 'Z' or '+02:00')")
    now, year = datetime.now(UTC), timedelta(seconds=MAX_DELAY_SECONDS)
    if not now - year <= when <= now + year:
        raise ValueError("must be within 366 days of now")
    return when


DeliverAt = Annotated[
    datetime,
    BeforeValidator(_epoch_ms),
    AfterValidator(_within_a_year),
    Field(description="when to deliver: an ISO-8601 date, or milliseconds since the epoch"),
]


class SendEventOptions(Body):
    deliver_at: DeliverAt | None = None
    deliver_after: StrictInt | StrictFloat | None = Field(
        default=None, ge=0, le=MAX_DELAY_SECONDS, description="seconds from now (a number)"
    )

    @model_validator(mode="after")
    def _one_delay(self) -> SendEventOptions:
        if self.deliver_at is not None and self.deliver_after is not None:
            raise ValueError("give deliverAt or deliverAfter, not both")
        return self


class SendEventBody(Body):
    event: EventBody
    options: SendEventOptions = Field(default_factory=SendEventOptions)


class RunTaskBody(BaseModel):
    """An io task as trigger.dev's v2 SDK sends it; only `noop` ones (io.logger) are run."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    idempotency_key: Identifier
    name: str = "task"
    noop: bool = False


class CreateEndpointBody(Body):
    slug: str = Field(max_length=63, description="the endpoint's id (trigger.dev's client id)")
    url: HttpUrl


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str
    issues: list[dict[str, str]] | None = Field(
        default=None, description="for invalid requests: each field and what is wrong with it"
    )


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error statuses a route can answer."""
    described = {
        400: "invalid request: malformed JSON, a field out of bounds, JSON nested deeper"
        f" than {MAX_JSON_DEPTH} levels",
        401: "missing or invalid API key",
        404: "no such resource in this environment",
        409: "conflicts with the resource's state",
        413: f"request body over {MAX_BODY_BYTES // 1024} KiB",
        422: "understood but not possible: an endpoint that did not answer correctly, an io"
        " task kongflow does not run",
        503: "the database is unavailable (see Retry-After)",
    }
    return {code: {"model": ErrorBody, "description": described[code]} for code in statuses}


_AUTHED = (400, 401, 413, 503)  # RequestGuard reads and checks every /api/ request's body


_bearer = HTTPBearer(
    auto_error=False,
    description="the API key of a runtime environment (`tr_dev_...`), as `Bearer <key>`",
)


async def _environment(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Environment:
    """The environment whose API key the request carries (checked by RequestGuard before the
    body was read)."""
    environment: Environment | None = getattr(request.state, "environment", None)
    if environment is None:  # a route outside the guarded prefix: never expected
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return environment


Env = Annotated[Environment, Depends(_environment)]


def create_app(jobs: JobsService) -> FastAPI:
    """The API over an open JobsService (whoever serves the app opens and closes it)."""
    app = FastAPI(title="kongflow", version="1", summary="Jobs, runs, events and endpoints")
    app.state.jobs = jobs
    app.add_middleware(RequestGuard, authenticate=jobs.environments.authenticate)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(psycopg.DataError)
    async def unstorable(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input PostgreSQL cannot hold, e.g. a \u0000 in a string: the caller's to fix.
        return JSONResponse({"error": f"invalid input: {exc.diag.message_primary or exc}"}, 400)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return database_unavailable()

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the logs"}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc.errors()), 400)

    @app.get("/health", tags=["operations"], responses={503: {"description": "database down"}})
    async def health() -> JSONResponse:
        """Whether the API can reach its database (the driver's reason goes to the log)."""
        try:
            async with jobs.client.pool.connection(timeout=2) as conn:
                await conn.execute("select 1")
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("health check: database unavailable: %s", exc)
            return JSONResponse({"status": "database unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    @app.post(
        "/api/v1/jobs/{job_slug}/test",
        status_code=202,
        tags=["jobs"],
        responses=_errors(*_AUTHED, 404),
    )
    async def test_job(
        job_slug: PathId, env: Env, body: TestJobBody | None = None
    ) -> dict[str, Any]:
        """Test a job: a test event and a run, queued at once."""
        try:
            queued = await jobs.runs.test_job(env, job_slug, (body or TestJobBody()).payload)
        except JobNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return _queued(queued)

    @app.post(
        "/api/v1/jobs/{job_slug}/invoke",
        status_code=202,
        tags=["jobs"],
        responses=_errors(*_AUTHED, 404, 409)
        | {200: {"description": "a repeated idempotency key: the run it created"}},
    )
    async def invoke_job(
        job_slug: PathId,
        env: Env,
        body: InvokeBody | None = None,
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=MAX_ID_LENGTH)
        ] = None,
    ) -> JSONResponse:
        """Invoke a job; a repeated `idempotency-key` returns the first run (200)."""
        body = body or InvokeBody()
        try:
            queued, created = await jobs.runs.invoke(
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
        return JSONResponse(_queued(queued), 202 if created else 200)

    @app.get("/api/v1/runs/{run_id}", tags=["runs"], responses=_errors(*_AUTHED, 404))
    async def get_run(run_id: PathId, env: Env) -> dict[str, Any]:
        return _run(await _found_run(jobs, env, run_id))

    @app.get("/api/v1/runs/{run_id}/statuses", tags=["runs"], responses=_errors(*_AUTHED, 404))
    async def run_statuses(run_id: PathId, env: Env) -> dict[str, Any]:
        run = await _found_run(jobs, env, run_id)
        return {
            "run": {"id": run["id"], "status": run["status"], "output": run["output"]},
            "statuses": [
                {"status": s["status"], "at": s["at"].isoformat(), "detail": s["detail"]}
                for s in run["statuses"]
            ],
        }

    @app.post("/api/v1/runs/{run_id}/cancel", tags=["runs"], responses=_errors(*_AUTHED, 404))
    async def cancel_run(run_id: PathId, env: Env) -> dict[str, Any]:
        """CANCELED from any non-terminal status; a finished run is returned unchanged."""
        run = await jobs.runs.cancel_run(env, run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r} in this environment")
        return _run(run)

    @app.post(
        "/api/v1/runs/{run_id}/tasks",
        tags=["runs"],
        responses=_errors(*_AUTHED, 404, 409, 422),
    )
    async def run_task(run_id: PathId, body: RunTaskBody, env: Env) -> dict[str, Any]:
        """What trigger.dev's v2 SDK calls for io tasks. kongflow runs jobs without io tasks,
        but completes the no-op ones (io.logger) so that jobs which log still run."""
        run = await _found_run(jobs, env, run_id)
        if run["status"] in TERMINAL:
            raise HTTPException(409, f"run {run_id} is {run['status']}: it takes no more tasks")
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

    @app.post("/api/v1/events", status_code=202, tags=["events"], responses=_errors(*_AUTHED))
    async def send_event(body: SendEventBody, env: Env) -> dict[str, Any]:
        """Store an event and deliver it to the jobs it triggers, now or later."""
        event = await jobs.events.send_event(
            env,
            NewEvent(
                id=body.event.id,
                name=body.event.name,
                payload=body.event.payload,
                context=body.event.context,
                source=body.event.source,
                timestamp=body.event.timestamp,
                deliver_at=body.options.deliver_at,
                deliver_after=body.options.deliver_after,
            ),
        )
        return {
            "id": event["event_id"],
            "name": event["name"],
            "payload": event["payload"],
            "context": event["context"],
            "timestamp": event["timestamp"].isoformat(),
            "deliverAt": iso_time(event["deliver_at"]),
            "deliveredAt": iso_time(event["delivered_at"]),
        }

    @app.post(
        "/api/v1/endpoints",
        status_code=201,
        tags=["endpoints"],
        responses=_errors(*_AUTHED, 422),
    )
    async def create_endpoint(body: CreateEndpointBody, env: Env) -> dict[str, Any]:
        """Register an endpoint (it must answer PING as `slug`) and queue its indexing."""
        try:
            check_slug(body.slug, "endpoint slug")
            endpoint = await jobs.endpoints.create_endpoint(env, body.slug, body.url)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        except EndpointError as exc:
            raise HTTPException(422, str(exc)) from None
        return _endpoint(endpoint) | {"indexing": "queued"}

    @app.get("/api/v1/endpoints", tags=["endpoints"], responses=_errors(*_AUTHED))
    async def list_endpoints(env: Env) -> list[dict[str, Any]]:
        return [_endpoint(e) for e in await jobs.endpoints.list_endpoints(env)]

    return app


async def _found_run(jobs: JobsService, env: Environment, run_id: str) -> dict[str, Any]:
    run = await jobs.runs.get_run(env, run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id!r} in this environment")
    return run


def _queued(queued: QueuedRun) -> dict[str, Any]:
    return {
        "id": queued.run_id,
        "runId": queued.run_id,
        "eventId": queued.event_id,
        "status": queued.status,
        "message": queued.message,
    }


def _run(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "jobId": run["job_slug"],
        "version": run["version"],
        "number": run["number"],
        "status": run["status"],
        "isTest": run["is_test"],
        "output": run["output"],
        "eventId": run["event_id"],
        "createdAt": iso_time(run["created_at"]),
        "queuedAt": iso_time(run["queued_at"]),
        "startedAt": iso_time(run["started_at"]),
        "completedAt": iso_time(run["completed_at"]),
        "updatedAt": iso_time(run["updated_at"]),
        "executionCount": run["execution_count"],
        "executionDurationInMs": run["execution_duration_ms"],
    }


def _endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": endpoint["id"],
        "slug": endpoint["slug"],
        "url": endpoint["url"],
        "indexedAt": iso_time(endpoint["indexed_at"]),
        "createdAt": iso_time(endpoint["created_at"]),
        "updatedAt": iso_time(endpoint["updated_at"]),
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less the 422 it documents for every route with parameters: kongflow
    answers invalid requests 400 (each route documents what it does answer)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for methods in schema["paths"].values():
            for operation in methods.values():
                default = operation["responses"].get("422", {})
                if "HTTPValidationError" in json.dumps(default):
                    del operation["responses"]["422"]
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _validation_error(errors: Any) -> dict[str, Any]:
    issues = [
        {"path": ".".join(str(p) for p in e["loc"][1:]) or "body", "message": e["msg"]}
        for e in errors
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        return {"error": "malformed JSON in the request body", "issues": issues}
    described = "; ".join(f"{i['path']}: {i['message']}" for i in issues)
    return {"error": f"invalid request: {described}", "issues": issues}
