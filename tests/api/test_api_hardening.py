"""The HTTP API against careless and hostile clients: body limits on the bytes received,
authentication before the body is read, slow and half-sent requests, id lengths, JSON depth,
delivery times, the OpenAPI contract, and answers without delay on kept-alive connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kongflow.api import BackgroundServer, create_app
from kongflow.api.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, json_depth
from kongflow.api.server import ServerLimits
from kongflow.service.environments import Environment
from kongflow.service.service import JobsService
from tests.support.db_proxy import DatabaseProxy


@dataclass
class Api:
    jobs: JobsService
    env: Environment
    server: BackgroundServer
    http: httpx.AsyncClient

    async def count(self, table: str) -> int:
        async with self.jobs.client.pool.connection() as conn:
            cur = await conn.execute(
                f'select count(*) from "{self.jobs.client.schema}".{table}'  # type: ignore[arg-type]
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])


@asynccontextmanager
async def api_stack(
    database_url: str, schema: str, limits: ServerLimits | None = None
) -> AsyncIterator[Api]:
    async with JobsService(database_url, schema=schema) as jobs:
        env = await jobs.environments.ensure("acme", "web")
        async with (
            BackgroundServer(create_app(jobs), limits=limits) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {env.api_key}"}
            ) as http,
        ):
            yield Api(jobs, env, server, http)


@pytest.fixture
async def api(database_url: str, schema: str) -> AsyncIterator[Api]:
    async with api_stack(database_url, schema) as api:
        yield api


async def raw_request(server: BackgroundServer, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are, and read what the server answers until it closes or pauses."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


def event(event_id: str | None = None, payload: Any = None, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": {"name": "order.placed", "payload": payload or {}}}
    if event_id is not None:
        body["event"]["id"] = event_id
    if options:
        body["options"] = options
    return body


# -- bodies --------------------------------------------------------------------------------


async def test_a_chunked_body_over_the_limit_is_refused_and_nothing_is_stored(api: Api) -> None:
    chunk = b'{"event": {"name": "big", "payload": {"x": "' + b"a" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'"}}}'

    response = await api.http.post(
        "/api/v1/events", content=body(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"error": "request body over 1024 KiB"}
    assert await api.count("event_records") == 0


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(api: Api) -> None:
    head = (
        "POST /api/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"Authorization: Bearer {api.env.api_key}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    )
    answer = await raw_request(api.server, head.encode())  # the body is never sent
    assert answer.startswith(b"HTTP/1.1 413")


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(api: Api) -> None:
    head = (
        "POST /api/v1/events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    answer = await raw_request(api.server, head.encode())  # no body sent: no wait for it
    assert answer.startswith(b"HTTP/1.1 401")
    assert b"missing API key" in answer


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer-ish", ""])
async def test_only_the_bearer_scheme_authenticates(api: Api, scheme: str) -> None:
    response = await api.http.get(
        "/api/v1/endpoints", headers={"Authorization": f"{scheme} {api.env.api_key}".strip()}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    ok = await api.http.get(
        "/api/v1/endpoints", headers={"Authorization": f"bearer {api.env.api_key}"}
    )
    assert ok.status_code == 200


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_json_depth_counts_arrays_and_objects() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth(nested(500)) == 500


async def test_json_nested_too_deeply_is_refused_before_anything_is_stored(api: Api) -> None:
    # {"event": {"payload": ...}} adds two levels to the payload's own.
    fits = await api.http.post("/api/v1/events", json=event(payload=nested(MAX_JSON_DEPTH - 2)))
    assert fits.status_code == 200, fits.text
    for depth in (MAX_JSON_DEPTH - 1, 300, 100_000):
        payload = "[" * depth + "1" + "]" * depth
        body = '{"event": {"name": "deep", "payload": ' + payload + "}}"
        response = await api.http.post(
            "/api/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, depth
        assert f"deeper than {MAX_JSON_DEPTH} levels" in response.json()["error"]
    assert await api.count("event_records") == 1


# -- ids and values ------------------------------------------------------------------------


async def test_over_long_ids_are_refused_naming_the_field(api: Api) -> None:
    long = "x" * 2700
    cases = [
        ("/api/v1/events", event(event_id=long), "event.id"),
        ("/api/v1/events", {"event": {"name": long}}, "event.name"),
        ("/api/v1/events", {"event": {"name": "a", "source": long}}, "event.source"),
        ("/api/v1/endpoints", {"slug": "a" * 64, "url": "http://127.0.0.1:1"}, "slug"),
        ("/api/v1/endpoints", {"slug": "a", "url": "http://h/" + long}, "url"),
        (
            "/api/v1/jobs/echo/invoke",
            {"options": {"callbackUrl": "http://h/" + long}},
            "options.callbackUrl",
        ),
        (f"/api/v1/jobs/{long}/test", {}, "job_slug"),
        (f"/api/v1/runs/{long}/cancel", None, "run_id"),
    ]
    for path, body, field in cases:
        response = await api.http.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert field in response.json()["error"], (field, response.text)
    response = await api.http.get(f"/api/v1/runs/{long}")
    assert (response.status_code, "run_id" in response.text) == (400, True)
    assert await api.count("event_records") == 0


@pytest.mark.parametrize("key", ["", "k" * 257])
async def test_an_empty_or_over_long_idempotency_key_is_refused(api: Api, key: str) -> None:
    response = await api.http.post(
        "/api/v1/jobs/echo/invoke", json={}, headers={"idempotency-key": key}
    )
    assert response.status_code == 400
    assert "idempotency-key" in response.json()["error"]


def _iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deliverAfter": "10"}, "deliverAfter"),
        ({"deliverAfter": True}, "deliverAfter"),
        ({"deliverAfter": -1}, "deliverAfter"),
        ({"deliverAfter": 400 * 86400}, "deliverAfter"),
        ({"deliverAt": "tomorrow"}, "deliverAt"),
        ({"deliverAt": "2026-01-01T00:00:00"}, "time zone"),
        ({"deliverAt": _iso(timedelta(days=400))}, "within 366 days"),
        ({"deliverAt": _iso(timedelta(days=-400))}, "within 366 days"),
        ({"deliverAt": 1.5e12}, "deliverAt"),
        ({"deliverAt": "1700000000000"}, "deliverAt"),
        ({"deliverAt": 10**20}, "deliverAt"),
        ({"deliverAt": _iso(timedelta(minutes=5)), "deliverAfter": 5}, "not both"),
    ],
)
async def test_delivery_times_have_one_type_each_and_bounds(
    api: Api, options: dict[str, Any], message: str
) -> None:
    response = await api.http.post("/api/v1/events", json=event(**options))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_delivery_times_in_each_documented_form(api: Api) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    for n, options in enumerate(
        [
            {"deliverAfter": 300},
            {"deliverAfter": 2.5},
            {"deliverAt": soon.isoformat()},
            {"deliverAt": soon.isoformat().replace("+00:00", "Z")},
            {"deliverAt": int(soon.timestamp() * 1000)},
        ]
    ):
        response = await api.http.post("/api/v1/events", json=event(f"e{n}", **options))
        assert response.status_code == 200, response.text
        assert response.json()["deliverAt"] is not None
    epoch = await api.http.post(
        "/api/v1/events", json=event("ms", deliverAt=int(soon.timestamp() * 1000))
    )
    assert abs(datetime.fromisoformat(epoch.json()["deliverAt"]) - soon) < timedelta(seconds=1)


# -- the connection ------------------------------------------------------------------------


def _ok_app() -> Starlette:
    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/", ok)])


async def test_accepted_connections_send_without_delay() -> None:
    """Nagle's algorithm held each answer after the first on a kept-alive connection for the
    client's delayed ACK (~40 ms): every accepted socket must have TCP_NODELAY."""
    async with BackgroundServer(_ok_app()) as server, httpx.AsyncClient() as http:
        for _ in range(3):
            assert (await http.get(server.url)).status_code == 200
        connections = server._server.server_state.connections
        assert connections
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_host_is_served() -> None:
    async with BackgroundServer(_ok_app(), "::1") as server, httpx.AsyncClient() as http:
        assert server.url.startswith("http://[::1]:")
        assert (await http.get(server.url)).json() == {"ok": True}


@pytest.fixture
def quick_limits() -> ServerLimits:
    return ServerLimits(header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=1)


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(65536), within)
    except (TimeoutError, ConnectionResetError):
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")  # EOF, or a 4xx then EOF


async def test_idle_and_half_sent_requests_are_dropped(quick_limits: ServerLimits) -> None:
    async with BackgroundServer(_ok_app(), limits=quick_limits) as server:
        connections = [await asyncio.open_connection(server.host, server.port) for _ in range(60)]
        for n, (_, writer) in enumerate(connections):
            if n % 3 == 1:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never end
            elif n % 3 == 2:
                writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        # A well-behaved client is still served meanwhile.
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.url)).status_code == 200
        closed = await asyncio.gather(*(_closed_by_server(r, 10) for r, _ in connections))
        assert all(closed), f"{closed.count(False)} of 60 connections still open"
        for _, writer in connections:
            writer.close()


async def test_a_slow_drip_of_headers_does_not_keep_the_connection(
    quick_limits: ServerLimits,
) -> None:
    async with BackgroundServer(_ok_app(), limits=quick_limits) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET / HTTP/1.1\r\n")
        for _ in range(20):  # a header line every 0.1 s: each resets no deadline
            writer.write(b"X-A: b\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
        assert await _closed_by_server(reader, 5)
        writer.close()


async def test_requests_over_the_concurrency_cap_get_503() -> None:
    gate = asyncio.Event()

    async def wait(request: Request) -> JSONResponse:
        await gate.wait()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/", wait)])
    limits = ServerLimits(max_requests=2, max_connections=10)
    async with BackgroundServer(app, limits=limits) as server, httpx.AsyncClient() as http:
        held = [asyncio.ensure_future(http.get(server.url)) for _ in range(2)]
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as other:
            assert (await other.get(server.url)).status_code == 503
        gate.set()
        assert [(await h).status_code for h in held] == [200, 200]


def test_server_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_timeout"):
        ServerLimits(header_timeout=0)
    with pytest.raises(ValueError, match="max_requests"):
        ServerLimits(max_requests=10, max_connections=5)


# -- the contract --------------------------------------------------------------------------


async def test_openapi_declares_bearer_auth_and_the_error_statuses(api: Api) -> None:
    schema = (await api.http.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    error_body = schema["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["error"]
    paths = schema["paths"]
    for path, methods in paths.items():
        if not path.startswith("/api/"):
            continue
        for method, operation in methods.items():
            assert operation["security"], (method, path)
            codes = set(operation["responses"])
            assert {"400", "401", "413", "503"} <= codes, (method, path)
            success = [c for c in codes if c.startswith("2") and method != "head"]  # bodiless
            for code in success:  # each success answer is a documented model
                content = operation["responses"][code].get("content", {})
                assert content.get("application/json", {}).get("schema"), (method, path, code)
    invoke = paths["/api/v1/jobs/{job_slug}/invoke"]["post"]["responses"]
    assert {"200", "404", "409", "413"} <= set(invoke)
    assert "422" not in invoke  # FastAPI's default: kongflow answers invalid requests 400
    assert "422" in paths["/api/v1/endpoints"]["post"]["responses"]


async def test_health_hides_the_drivers_message(database_url: str, schema: str) -> None:
    async with api_stack(database_url, schema) as api:
        assert (await api.http.get("/health")).json() == {"status": "ok"}
        await api.jobs.client.pool.close()  # as good as a database that went away
        response = await api.http.get("/health")
        assert (response.status_code, response.json()) == (503, {"status": "database unavailable"})
        refused = await api.http.get("/api/v1/endpoints")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        assert refused.json() == {"error": "the database is unavailable; retry shortly"}


async def test_a_database_that_goes_away_gets_503_at_once_and_comes_back(
    database_url: str, schema: str
) -> None:
    proxy = DatabaseProxy(database_url)
    await proxy.up()
    try:
        async with api_stack(proxy.url, schema) as api:
            assert (await api.http.get("/api/v1/endpoints")).status_code == 200
            await proxy.down()
            loop = asyncio.get_running_loop()
            for _ in range(3):
                started = loop.time()
                response = await api.http.get("/api/v1/endpoints", timeout=30)
                # Not a speed figure: the pool's own timeout is 30 s, and the answer must come
                # from the API's bound on waiting for the database instead.
                assert loop.time() - started < 10
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "2"
                assert response.json() == {"error": "the database is unavailable; retry shortly"}
            health = await api.http.get("/health", timeout=30)
            assert (health.status_code, health.json()) == (503, {"status": "database unavailable"})
            await proxy.up()
            deadline = loop.time() + 30
            while (await api.http.get("/api/v1/endpoints", timeout=30)).status_code != 200:
                assert loop.time() < deadline, "the API did not recover with the database"
                await asyncio.sleep(0.2)
    finally:
        await proxy.close()
