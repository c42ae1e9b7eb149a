"""Endpoints registered (after a PING) and listed."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from kongflow.api.deps import Env, Jobs
from kongflow.api.errors import AUTHED, documented
from kongflow.api.inputs import CreateEndpointBody
from kongflow.api.responses import EndpointAnswer, RegisteredEndpoint
from kongflow.service.endpoint_api import EndpointError
from kongflow.service.environments import check_slug

router = APIRouter(prefix="/api/v1/endpoints", tags=["endpoints"])


@router.post("", responses=documented(*AUTHED, 422))
async def create_endpoint(body: CreateEndpointBody, env: Env, jobs: Jobs) -> RegisteredEndpoint:
    """Register an endpoint (it must answer PING as `slug`) and queue its indexing. 200, as
    trigger.dev's SDK expects (it retries any other status)."""
    try:
        check_slug(body.slug, "endpoint slug")
        endpoint = await jobs.endpoints.create_endpoint(env, body.slug, body.url)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except EndpointError as exc:
        raise HTTPException(422, str(exc)) from None
    return RegisteredEndpoint.of(endpoint)


@router.get("", responses=documented(*AUTHED))
async def list_endpoints(env: Env, jobs: Jobs) -> list[EndpointAnswer]:
    return [EndpointAnswer.of(e) for e in await jobs.endpoints.list_endpoints(env)]
