"""trigger.dev's key-value store: values (anything JSON writes) kept by the jobs service per
environment, namespaced for a job (`job:<jobId>:<key>`) or a run (`run:<runId>:<key>`).

Inside a run use `io.store.env`, `io.store.job` or `io.store.run`: each call is a task, so a
replayed run sees what the first execution saw. Outside runs `endpoint.store.env` calls the
API directly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kongflow.protocol import DisplayProperty
from kongflow.sdk.api import ApiClient
from kongflow.sdk.keys import CacheKey, js_string

if TYPE_CHECKING:
    from kongflow.sdk.io import IO


def namespaced_key(type: str | None, namespace: str, key: str) -> str:
    """trigger.dev's #namespacedKey: the type, the namespace and the key, joined with ":"."""
    return ":".join([*(part for part in (type, namespace) if part), key])


class KeyValueStore:
    """One namespace of the store, called directly (outside runs); a short-lived API client
    per call."""

    def __init__(
        self,
        client: Callable[[], ApiClient],
        type: str | None = None,
        namespace: str = "",
    ) -> None:
        self._client = client
        self.type = type
        self.namespace = namespace

    def _key(self, key: str) -> str:
        if not key:
            raise ValueError("a key-value store key must not be empty")
        return namespaced_key(self.type, self.namespace, key)

    async def get(self, key: str) -> Any:
        async with self._client() as api:
            return await api.store_get(self._key(key))

    async def set(self, key: str, value: Any) -> Any:
        async with self._client() as api:
            return await api.store_set(self._key(key), value)

    async def delete(self, key: str) -> bool:
        async with self._client() as api:
            return await api.store_delete(self._key(key))

    async def has(self, key: str) -> bool:
        async with self._client() as api:
            return await api.store_has(self._key(key))


class EndpointStores:
    """`endpoint.store`: the environment's store, outside runs."""

    def __init__(self, client: Callable[[], ApiClient]) -> None:
        self.env = KeyValueStore(client)


class RunKeyValueStore:
    """One namespace of the store inside a run: `await io.store.run.set("remember", "name",
    value)`. The first argument is the call's cache key (unique in the run, like any task's),
    the second the store's key."""

    def __init__(self, io: IO, type: str | None = None, namespace: str = "") -> None:
        self._io = io
        self.type = type
        self.namespace = namespace

    def _key(self, key: str) -> str:
        if not key or not isinstance(key, str):
            raise ValueError(
                "Please provide a non-empty key when accessing the store from inside a run."
            )
        return namespaced_key(self.type, self.namespace, key)

    def _properties(self, key: str) -> list[DisplayProperty]:
        return [
            DisplayProperty(label="namespace", text=self.type or "env"),
            DisplayProperty(label="key", text=key),
        ]

    async def _task(
        self,
        cache_key: CacheKey,
        call: Callable[[ApiClient], Awaitable[Any]],
        name: str,
        icon: str,
        params: dict[str, Any],
        properties: list[DisplayProperty],
    ) -> Any:
        async def body(task: Any) -> Any:
            return await call(self._io.api)

        return await self._io.run_task(
            cache_key,
            body,
            name=name,
            icon=icon,
            params=params,
            properties=properties,
            style={"style": "minimal"},
        )

    async def get(self, cache_key: CacheKey, key: str) -> Any:
        full = self._key(key)
        return await self._task(
            cache_key,
            lambda api: api.store_get(full),
            "Key-Value Store Get",
            "database-export",
            {"key": key},
            self._properties(key),
        )

    async def set(self, cache_key: CacheKey, key: str, value: Any) -> Any:
        full = self._key(key)
        properties = self._properties(key)
        if not isinstance(value, dict | list | tuple):  # a scalar is shown (null too)
            text = "null" if value is None else js_string(value)
            properties.append(DisplayProperty(label="value", text=text))
        return await self._task(
            cache_key,
            lambda api: api.store_set(full, value),
            "Key-Value Store Set",
            "database-plus",
            {"key": key, "value": value},
            properties,
        )

    async def delete(self, cache_key: CacheKey, key: str) -> bool:
        full = self._key(key)
        deleted = await self._task(
            cache_key,
            lambda api: api.store_delete(full),
            "Key-Value Store Delete",
            "database-minus",
            {"key": key},
            self._properties(key),
        )
        return bool(deleted)

    async def has(self, cache_key: CacheKey, key: str) -> bool:
        full = self._key(key)
        present = await self._task(
            cache_key,
            lambda api: api.store_has(full),
            "Key-Value Store Has",
            "database-search",
            {"key": key},
            self._properties(key),
        )
        return bool(present)


class RunStores:
    """`io.store`: the environment's, the job's and the run's namespaces."""

    def __init__(self, io: IO, job_id: str, run_id: str) -> None:
        self.env = RunKeyValueStore(io)
        self.job = RunKeyValueStore(io, "job", job_id)
        self.run = RunKeyValueStore(io, "run", run_id)
