"""How the API answers what goes wrong: always JSON `{"error": "..."}` with a status that says
whose fault it is, and the OpenAPI documentation of those statuses (every route documents the
ones it answers, and only those: tests/api/test_api_contract.py holds it to that)."""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kongflow.api.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, database_unavailable, error

log = logging.getLogger("kongflow.api")


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str
    issues: list[dict[str, str]] | None = Field(
        default=None, description="for invalid requests: each field and what is wrong with it"
    )


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the error statuses a route can answer."""
    described = {
        400: "invalid request: malformed JSON, a field out of bounds, JSON nested deeper"
        f" than {MAX_JSON_DEPTH} levels",
        401: "missing or invalid API key",
        404: "no such resource in this environment",
        409: "conflicts with the resource's state",
        413: f"request body over {MAX_BODY_BYTES // 1024} KiB",
        422: "understood but not possible: an endpoint that did not answer correctly",
        503: "the database is unavailable (see Retry-After)",
    }
    return {code: {"model": ErrorBody, "description": described[code]} for code in statuses}


AUTHED = (400, 401, 413, 503)  # RequestGuard reads and checks every /api/ request's body


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answered as JSON, and the schema documenting what routes answer."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(psycopg.DataError)
    async def unstorable(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input PostgreSQL cannot hold, e.g. a \u0000 in a string: the caller's to fix.
        return error(400, f"invalid input: {exc.diag.message_primary or exc}")

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
        return database_unavailable()

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the logs")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc.errors()), 400)


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
