"""Requests from the jobs service to a user's endpoint (trigger.dev's EndpointApi)."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from kongflow.protocol import (
    ACTION_HEADER,
    API_KEY_HEADER,
    ENDPOINT_ID_HEADER,
    Action,
    IndexEndpointResponse,
    PingResponse,
    RunJobBody,
    Wire,
)
from kongflow.queue.errors import KongflowError

M = TypeVar("M", bound=Wire)


class EndpointError(KongflowError):
    """The endpoint could not be reached or answered something kongflow cannot use."""


class EndpointApi:
    def __init__(self, http: httpx.AsyncClient, url: str, api_key: str) -> None:
        self.http, self.url, self.api_key = http, url, api_key

    async def ping(self, endpoint_slug: str) -> PingResponse:
        """Is the app at this URL the endpoint `endpoint_slug`, and does it accept our key?"""
        response = await self._post("PING", None, {ENDPOINT_ID_HEADER: endpoint_slug})
        return self._parse(response, PingResponse, "PING")

    async def index(self) -> IndexEndpointResponse:
        response = await self._post("INDEX_ENDPOINT", None)
        return self._parse(response, IndexEndpointResponse, "INDEX_ENDPOINT")

    async def execute(self, body: RunJobBody, timeout: float) -> httpx.Response:
        """The raw answer: what it means for the run is the execution's to decide."""
        return await self._post("EXECUTE_JOB", body.wire(), timeout=timeout)

    async def _post(
        self,
        action: Action,
        body: Any,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        request_headers = {ACTION_HEADER: action, API_KEY_HEADER: self.api_key} | (headers or {})
        return await self.http.post(
            self.url,
            json=body or {},
            headers=request_headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )

    def _parse(self, response: httpx.Response, model: type[M], action: str) -> M:
        if response.status_code != 200:
            raise EndpointError(
                f"endpoint {self.url} answered {action} with HTTP {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise EndpointError(
                f"endpoint {self.url} sent a malformed {action} answer: {exc}"
            ) from None
