"""Endpoints registered (after a PING) and listed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import CreateEndpointBody
from kongflow.protocol import iso_time
from kongflow.service.endpoint_api import EndpointError
from kongflow.service.environments import check_slug
from kongflow.service.rows import Endpoint

router = APIRouter(prefix="/api/v1/endpoints", tags=["endpoints"])


@router.post("", status_code=201, responses=documented(*AUTHED, 422))
async def create_endpoint(body: CreateEndpointBody, env: Env, jobs: Jobs) -> dict[str, Any]:
    """Register an endpoint (it must answer PING as `slug`) and queue its indexing."""
    try:
        check_slug(body.slug, "endpoint slug")
        endpoint = await jobs.endpoints.create_endpoint(env, body.slug, body.url)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except EndpointError as exc:
        raise HTTPException(422, str(exc)) from None
    return endpoint_body(endpoint) | {"indexing": "queued"}


@router.get("", responses=documented(*AUTHED))
async def list_endpoints(env: Env, jobs: Jobs) -> list[dict[str, Any]]:
    return [endpoint_body(e) for e in await jobs.endpoints.list_endpoints(env)]


def endpoint_body(endpoint: Endpoint) -> dict[str, str | None]:
    return {
        "id": endpoint.id,
        "slug": endpoint.slug,
        "url": endpoint.url,
        "indexedAt": iso_time(endpoint.indexed_at),
        "createdAt": iso_time(endpoint.created_at),
        "updatedAt": iso_time(endpoint.updated_at),
    }
