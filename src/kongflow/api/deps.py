"""What routes are given: the jobs service the app serves, and the environment whose API key
the request carries (checked by RequestGuard before the body was read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kongflow.service.environments import Environment
from kongflow.service.service import JobsService


async def _jobs(request: Request) -> JobsService:
    # async: FastAPI runs a plain `def` dependency in a thread, a hop on every request
    jobs: JobsService = request.app.state.jobs
    return jobs


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
Jobs = Annotated[JobsService, Depends(_jobs)]
