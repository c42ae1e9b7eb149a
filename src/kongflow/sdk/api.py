"""The endpoint's client of the jobs service's API (trigger.dev's ApiClient): io's tasks, run
statuses, the key-value store and events, authenticated with the environment's API key.

A call that cannot connect, times out or is answered 5xx is tried again a few times with a
short exponential backoff (as trigger.dev's zodfetch); a 4xx is an error at once."""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, ValidationError
from pydantic_core import to_jsonable_python

from kongflow.protocol import (
    CACHED_TASKS_CURSOR_HEADER,
    LAZY_LOADED_CACHED_TASKS,
    SERIALIZED_TASK_OUTPUT,
    CachedTask,
    DisplayProperty,
    Wire,
)
from kongflow.sdk.flow import RateLimited

#: Where the API is when `Endpoint(api_url=...)` is not given: the first of these set.
API_URL_VARIABLES = ("KONGFLOW_API_URL", "TRIGGER_API_URL")

#: Tries after the first, and their backoff (trigger.dev's: 2**n * 80 ms up to 2 s, plus up to
#: 50 ms of jitter); each request's own timeout.
MAX_RETRIES = 4
MIN_DELAY_MS = 80
MAX_DELAY_MS = 2000
JITTER_MS = 50
TIMEOUT = httpx.Timeout(15.0, connect=5.0)

#: The largest value the key-value store takes (its JSON text).
MAX_STORE_VALUE_BYTES = 256 * 1024


class ApiError(Exception):
    """A call to the jobs service's API failed: refused (4xx), or still failing (5xx, no
    connection, a timeout) after its retries."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MissingApiUrl(RuntimeError):
    """io needs the API's URL and the endpoint was given none."""

    def __init__(self) -> None:
        super().__init__(
            "io needs the URL of kongflow's API: pass Endpoint(..., api_url=...) or set "
            + " or ".join(API_URL_VARIABLES)
        )


def api_url_from_env() -> str | None:
    for name in API_URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class ServerTask(Wire):
    """A task as the server stores it (trigger.dev's ServerTask). A task's body receives it;
    it may set `output_properties`, which are shown with the task once it completes."""

    id: str
    name: str
    noop: bool
    status: str
    idempotency_key: str
    attempts: int
    icon: str | None = None
    description: str | None = None
    params: Any = None
    properties: list[DisplayProperty] | None = None
    output_properties: list[DisplayProperty] | None = None
    output: Any = None
    context: Any = None
    error: str | None = None
    parent_id: str | None = None
    style: dict[str, Any] | None = None
    operation: str | None = None
    callback_url: str | None = None
    delay_until: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    force_yield: bool | None = None


class CachedTasksPage(Wire):
    tasks: list[CachedTask] = Field(default_factory=list)
    cursor: str | None = None


@dataclass(frozen=True)
class RunTaskAnswer:
    task: ServerTask
    #: Completed tasks sent along (lazy loading of the run's cache); None when the server is
    #: not versioned, an empty page when it sent none.
    cached: CachedTasksPage | None


def json_text(value: Any) -> str:
    """`value` as JSON text, as JavaScript's JSON.stringify writes it (compact, non-ASCII
    kept, NaN and infinities as null); pydantic models and dataclasses are dumped."""
    jsonable = to_jsonable_python(value, by_alias=True, inf_nan_mode="null")
    return json.dumps(jsonable, separators=(",", ":"), ensure_ascii=False)


def encode_component(text: str) -> str:
    """JavaScript's encodeURIComponent."""
    return quote(text, safe="-_.!~*'()")


def _backoff(retry: int) -> float:
    """Seconds before try number `retry` + 1."""
    delay: float = min(2**retry * MIN_DELAY_MS, MAX_DELAY_MS)
    return (delay + random.random() * JITTER_MS) / 1000


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        for name in ("error", "message"):
            if isinstance(body.get(name), str):
                return str(body[name])
    return response.text[:500]


def new_http_client(timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    """An HTTP client for API calls. Making one costs tens of milliseconds (its TLS context),
    so an endpoint shares one between its executions, kept-alive connections included."""
    return httpx.AsyncClient(timeout=timeout)


class ApiClient:
    """One execution's (or one store call's) client of the API; `aclose()` when done. It
    sends through `http` when given (which it leaves open), else through a client of its own,
    made at the first call."""

    def __init__(
        self,
        api_url: str | None,
        api_key: str,
        *,
        timeout: httpx.Timeout = TIMEOUT,
        max_retries: int = MAX_RETRIES,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max_retries
        self._http = http
        self._owns_http = http is None

    async def aclose(self) -> None:
        if self._http is not None and self._owns_http:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def check(self) -> None:
        """Raise MissingApiUrl if calls cannot be made."""
        if self.api_url is None:
            raise MissingApiUrl()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: str | None = None,
        headers: dict[str, str] | None = None,
        absent_ok: bool = False,
    ) -> httpx.Response:
        """The 2xx answer to `method path` (or a 404 when `absent_ok`), retrying what may pass."""
        self.check()
        if self._http is None:
            self._http = new_http_client(self._timeout)
        url = f"{self.api_url}{path}"
        sent = {"Authorization": f"Bearer {self._api_key}", **(headers or {})}
        if json_body is not None:
            content = json_text(json_body)
            sent.setdefault("Content-Type", "application/json")
        failure: ApiError
        for attempt in range(self._max_retries + 1):
            try:
                response = await self._http.request(
                    method,
                    url,
                    content=content.encode() if content is not None else None,
                    headers=sent,
                )
            except httpx.TransportError as exc:  # no connection, a timeout, a broken answer
                failure = ApiError(f"{method} {path} failed: {type(exc).__name__}: {exc}")
                failure.__cause__ = exc
            else:
                code = response.status_code
                if code == 429 and response.headers.get("x-ratelimit-reset"):
                    try:
                        reset = float(response.headers["x-ratelimit-reset"])
                    except ValueError:
                        reset = None
                    if reset is not None:
                        raise RateLimited(reset)
                if 200 <= code < 300 or (absent_ok and code == 404):
                    return response
                failure = ApiError(
                    f"{method} {path} answered HTTP {code}: {_reason(response)}", status=code
                )
                if code < 500:
                    raise failure
            if attempt < self._max_retries:
                await asyncio.sleep(_backoff(attempt + 1))
        raise failure

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the answer is not JSON") from exc

    # -- tasks --------------------------------------------------------------------------------

    async def run_task(
        self, run_id: str, body: dict[str, Any], cursor: str | None
    ) -> RunTaskAnswer:
        response = await self.request(
            "POST",
            f"/api/v1/runs/{encode_component(run_id)}/tasks",
            json_body=body,
            headers={
                "Idempotency-Key": body["idempotencyKey"],
                CACHED_TASKS_CURSOR_HEADER: cursor or "",
                "Trigger-Version": LAZY_LOADED_CACHED_TASKS,
            },
        )
        version = response.headers.get("trigger-version")
        try:
            raw = response.json()
            if not version:
                return RunTaskAnswer(ServerTask.model_validate(raw), None)
            if version != LAZY_LOADED_CACHED_TASKS:
                raise ApiError(f"Unknown version {version}")
            if not isinstance(raw, dict):
                raise ApiError("the task answer is not an object")
            page = CachedTasksPage.model_validate(raw.get("cachedTasks") or {})
            return RunTaskAnswer(ServerTask.model_validate(raw.get("task")), page)
        except (ValueError, ValidationError) as exc:  # ValidationError is a ValueError too
            raise ApiError(f"the task answer is malformed: {exc}") from exc

    async def complete_task(
        self,
        run_id: str,
        task_id: str,
        output: str,
        properties: list[DisplayProperty] | None,
    ) -> ServerTask:
        body: dict[str, Any] = {"output": output}
        if properties:
            body["properties"] = [p.wire() for p in properties]
        raw = await self._json(
            "POST",
            f"/api/v1/runs/{encode_component(run_id)}/tasks/{encode_component(task_id)}/complete",
            json_body=body,
            headers={"Trigger-Version": SERIALIZED_TASK_OUTPUT},
        )
        return _task(raw)

    async def fail_task(self, run_id: str, task_id: str, error: dict[str, Any]) -> ServerTask:
        raw = await self._json(
            "POST",
            f"/api/v1/runs/{encode_component(run_id)}/tasks/{encode_component(task_id)}/fail",
            json_body={"error": error},
        )
        return _task(raw)

    # -- statuses and events ------------------------------------------------------------------

    async def update_status(
        self, run_id: str, status_id: str, update: dict[str, Any]
    ) -> dict[str, Any]:
        raw = await self._json(
            "PUT",
            f"/api/v1/runs/{encode_component(run_id)}/statuses/{encode_component(status_id)}",
            json_body=update,
        )
        return _object(raw, "status")

    async def send_event(self, event: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        raw = await self._json(
            "POST", "/api/v1/events", json_body={"event": event, "options": options}
        )
        return _object(raw, "event")

    # -- the key-value store ------------------------------------------------------------------

    def _store_path(self, key: str) -> str:
        return f"/api/v1/store/{encode_component(key)}"

    async def store_get(self, key: str) -> Any:
        raw = _store_answer(await self._json("GET", self._store_path(key)), "GET")
        return _deserialize(raw.get("value"))

    async def store_set(self, key: str, value: Any) -> Any:
        text = json_text(value)
        if len(text) > MAX_STORE_VALUE_BYTES:
            raise ValueError(f"Max request body size exceeded: {MAX_STORE_VALUE_BYTES} bytes")
        raw = await self._json(
            "PUT", self._store_path(key), content=text, headers={"Content-Type": "text/plain"}
        )
        return _deserialize(_store_answer(raw, "SET").get("value"))

    async def store_delete(self, key: str) -> bool:
        raw = _store_answer(await self._json("DELETE", self._store_path(key)), "DELETE")
        return bool(raw.get("deleted"))

    async def store_has(self, key: str) -> bool:
        response = await self.request("HEAD", self._store_path(key), absent_ok=True)
        return response.status_code != 404


def _task(raw: Any) -> ServerTask:
    try:
        return ServerTask.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(f"the task answer is malformed: {exc}") from exc


def _object(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ApiError(f"the {what} answer is not an object")
    return raw


def _store_answer(raw: Any, action: str) -> dict[str, Any]:
    answer = _object(raw, "key-value store")
    if answer.get("action") != action:
        raise ApiError(f"Unexpected key-value store response: {answer.get('action')}")
    return answer


def _deserialize(value: Any) -> Any:
    """A stored value: its JSON text parsed (none for an absent or empty one)."""
    if not value:
        return None
    if not isinstance(value, str):
        raise ApiError("the key-value store sent a value that is not JSON text")
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ApiError("the key-value store sent a value that is not JSON") from exc
