"""`GET /health`: whether the API can reach its database."""

from __future__ import annotations

import logging

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from kongflow.api.deps import Jobs

router = APIRouter(tags=["operations"])
log = logging.getLogger("kongflow.api")


@router.get("/health", responses={503: {"description": "database down"}})
async def health(jobs: Jobs) -> JSONResponse:
    """Whether the API can reach its database (the driver's reason goes to the log)."""
    try:
        async with jobs.client.pool.connection(timeout=2) as conn:
            await conn.execute("select 1")
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("health check: database unavailable: %s", exc)
        return JSONResponse({"status": "database unavailable"}, 503)
    return JSONResponse({"status": "ok"})
