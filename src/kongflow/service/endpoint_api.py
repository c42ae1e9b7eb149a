"""Requests from the jobs service to a user's endpoint (trigger.dev's EndpointApi), made
through the service's `Outbound` (network policy, size cap, no redirects)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import ValidationError

from kongflow.engine.errors import KongflowError
from kongflow.protocol import (
    ACTION_HEADER,
    API_KEY_HEADER,
    ENDPOINT_ID_HEADER,
    LAZY_LOADED_CACHED_TASKS,
    VERSION_HEADER,
    Action,
    IndexEndpointResponse,
    PingResponse,
    RunJobBody,
    Wire,
)
from kongflow.service.outbound import Answer, MiB, Outbound, OutboundError, UrlRefused

M = TypeVar("M", bound=Wire)

log = logging.getLogger("kongflow.outbound")


class EndpointError(KongflowError):
    """The endpoint could not be reached or answered something kongflow cannot use. The
    message is fit for an API client: it never holds what the endpoint answered."""


class EndpointApi:
    def __init__(
        self,
        outbound: Outbound,
        url: str,
        api_key: str,
        *,
        limit: int = 4 * MiB,
        timeout: float | None = None,
    ) -> None:
        self.outbound, self.url, self.api_key = outbound, url, api_key
        self.limit, self.timeout = limit, timeout

    async def ping(self, endpoint_slug: str) -> PingResponse:
        """Is the app at this URL the endpoint `endpoint_slug`, and does it accept our key?
        EndpointError if it does not answer PING properly; UrlRefused (a ValueError) if the
        URL may not be called."""
        answer = await self._checked_post("PING", None, {ENDPOINT_ID_HEADER: endpoint_slug})
        return self._parse(answer, PingResponse, "PING")

    async def index(self) -> IndexEndpointResponse:
        answer = await self._checked_post("INDEX_ENDPOINT", None)
        return self._parse(answer, IndexEndpointResponse, "INDEX_ENDPOINT")

    async def execute(self, body: RunJobBody, timeout: float) -> Answer:
        """The raw answer: what it means for the run is the execution's to decide. Raises
        the Outbound's errors."""
        return await self._post("EXECUTE_JOB", body.wire(), timeout=timeout)

    async def notify(self, body: bytes, timeout: float) -> Answer:
        """RUN_NOTIFICATION (a run's outcome, for its onSuccess / onFailure hooks); raises the
        Outbound's errors."""
        return await self.outbound.post(
            self.url,
            content=body,
            headers={
                "content-type": "application/json",
                ACTION_HEADER: "RUN_NOTIFICATION",
                API_KEY_HEADER: self.api_key,
                VERSION_HEADER: LAZY_LOADED_CACHED_TASKS,
            },
            timeout=timeout,
            limit=self.limit,
        )

    async def _checked_post(
        self, action: Action, body: Any, headers: dict[str, str] | None = None
    ) -> Answer:
        try:
            return await self._post(action, body, headers, self.timeout)
        except UrlRefused:
            raise
        except OutboundError as exc:
            raise EndpointError(str(exc)) from None

    async def _post(
        self,
        action: Action,
        body: Any,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        request_headers = {
            ACTION_HEADER: action,
            API_KEY_HEADER: self.api_key,
            VERSION_HEADER: LAZY_LOADED_CACHED_TASKS,
        } | (headers or {})
        return await self.outbound.post(
            self.url, json=body or {}, headers=request_headers, timeout=timeout, limit=self.limit
        )

    def _parse(self, answer: Answer, model: type[M], action: str) -> M:
        if answer.status_code != 200:
            log.debug(
                "%s answered %s with HTTP %s: %.300r",
                self.url,
                action,
                answer.status_code,
                answer.content,
            )
            hint = (
                ": does it have this environment's API key?"
                if answer.status_code in (401, 403)
                else ""
            )
            raise EndpointError(
                f"the endpoint did not answer {action} correctly (HTTP {answer.status_code}){hint}"
            )
        try:
            return model.model_validate_json(answer.content)
        except ValidationError as exc:
            log.debug("%s sent a malformed %s answer: %s", self.url, action, exc)
            raise EndpointError(
                f"the endpoint sent a malformed {action} answer (not trigger.dev's "
                f"{model.__name__})"
            ) from None
