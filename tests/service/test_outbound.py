"""Outbound calls to users' URLs: the network policy, the size cap, no redirects, and errors
that never hand a target's answer (or its port's state) to an API client. Every server here is
on 127.0.0.1; refused addresses are refused before any packet is sent."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from kongflow.service.network import NetworkPolicy
from kongflow.service.outbound import (
    AnswerTooLarge,
    BadAnswer,
    KiB,
    MiB,
    Outbound,
    Redirected,
    TimedOut,
    Unreachable,
    UrlRefused,
)
from tests.support.hostile import SECRET, Hostile, closed_port
from tests.support.jobs_stack import Stack, jobs_stack, wait_until

# -- calls against a hostile server ------------------------------------------------------------


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    async with Hostile() as server:
        yield server


@pytest.fixture
async def outbound() -> AsyncIterator[Outbound]:
    async with Outbound(NetworkPolicy.dev(), timeout=2) as client:
        yield client


async def test_a_300_mb_answer_is_cut_at_the_cap_without_being_buffered(
    hostile: Hostile, outbound: Outbound
) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.monotonic()
    with pytest.raises(AnswerTooLarge, match=r"^the endpoint's answer is over 4 MiB$"):
        await outbound.post(hostile.url + "/huge", limit=4 * MiB, timeout=60)
    assert time.monotonic() - started < 10
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak_after - peak_before < 100 * MiB
    await asyncio.sleep(0.2)  # the server notices the connection is gone
    assert hostile.sent < 64 * MiB  # it stopped reading, rather than draining 300 MB


async def test_a_declared_length_over_the_cap_fails_at_once(
    hostile: Hostile, outbound: Outbound
) -> None:
    started = time.monotonic()
    with pytest.raises(AnswerTooLarge, match="over 64 KiB"):
        await outbound.post(hostile.url + "/declared", limit=64 * KiB, target="subscriber")
    assert time.monotonic() - started < 1.5


async def test_a_compressed_answer_is_capped_as_it_is_decompressed(
    hostile: Hostile, outbound: Outbound
) -> None:
    with pytest.raises(AnswerTooLarge, match="over 4 MiB"):
        await outbound.post(hostile.url + "/bomb", limit=4 * MiB)
    answer = await outbound.post(hostile.url + "/gzipped", limit=1024)
    assert json.loads(answer.content) == {"ok": True}


async def test_an_answer_sent_a_byte_at_a_time_times_out(
    hostile: Hostile, outbound: Outbound
) -> None:
    started = time.monotonic()
    with pytest.raises(TimedOut) as timed_out:
        await outbound.post(hostile.url + "/drip", limit=4 * MiB, timeout=1)
    assert time.monotonic() - started < 3
    assert str(timed_out.value) == f"could not reach the endpoint at {hostile.url}/drip"
    with pytest.raises(TimedOut):
        await outbound.post(hostile.url + "/silent", limit=4 * MiB, timeout=0.5)


async def test_redirects_are_not_followed(hostile: Hostile, outbound: Outbound) -> None:
    async with Hostile() as landing:
        hostile.redirect_to = landing.url + "/landed"
        with pytest.raises(Redirected) as redirected:
            await outbound.post(hostile.url + "/redirect", limit=4 * MiB)
        assert str(redirected.value) == (
            "the endpoint answered with a redirect (HTTP 302), which kongflow does not follow"
        )
        assert isinstance(redirected.value, BadAnswer)
        assert landing.requests == []


async def test_closed_silent_resetting_and_hanging_up_ports_look_the_same(
    hostile: Hostile, outbound: Outbound
) -> None:
    urls = [
        f"http://127.0.0.1:{closed_port()}/",
        hostile.url + "/silent",
        hostile.url + "/reset",
        hostile.url + "/hangup",
    ]
    messages = []
    for url in urls:
        with pytest.raises(Unreachable) as unreachable:
            await outbound.post(url, limit=4 * MiB, timeout=0.5)
        messages.append(str(unreachable.value).replace(url, "<url>"))
    assert messages == ["could not reach the endpoint at <url>"] * 4


async def test_the_connection_goes_to_the_checked_address_with_the_names_host_header(
    hostile: Hostile,
) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> Sequence[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    async with Outbound(NetworkPolicy.strict(["127.0.0.1/32"]), resolver=resolver) as client:
        answer = await client.post(f"http://rebind.test:{hostile.port}/host", limit=1024)
    # `rebind.test` exists only in this resolver: the connection used what it answered.
    assert json.loads(answer.content) == {"host": f"rebind.test:{hostile.port}"}
    assert lookups == ["rebind.test"]
    assert [r.headers["host"] for r in hostile.requests] == [f"rebind.test:{hostile.port}"]


async def test_a_name_resolving_to_allowed_and_refused_addresses_is_not_called(
    hostile: Hostile,
) -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1", "169.254.169.254"]  # the allowed one first

    async with Outbound(NetworkPolicy.dev(), resolver=resolver) as client:
        with pytest.raises(UrlRefused, match="resolves to a link-local address"):
            await client.post(f"http://mixed.test:{hostile.port}/", limit=1024)
    assert hostile.requests == []


async def test_a_policy_without_loopback_never_connects_to_it(hostile: Hostile) -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    async with Outbound(NetworkPolicy.strict(), resolver=resolver) as client:
        for url in [hostile.url, f"http://[::ffff:127.0.0.1]:{hostile.port}", "http://rebind.test"]:
            with pytest.raises(UrlRefused, match="a loopback address"):
                await client.post(url + "/", limit=1024)
    assert hostile.requests == []


async def test_connections_are_kept_alive(outbound: Outbound) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from kongflow.api import BackgroundServer

    peers: list[int] = []

    async def peer(request: Request) -> JSONResponse:
        assert request.client is not None
        peers.append(request.client.port)
        return JSONResponse({})

    app = Starlette(routes=[Route("/", peer, methods=["POST"])])
    async with BackgroundServer(app) as server:
        for _ in range(3):
            assert (await outbound.post(server.url + "/", limit=1024)).status_code == 200
    assert len(set(peers)) == 1


# -- through the API ---------------------------------------------------------------------------


@pytest.fixture
async def stack(database_url: str, schema: str) -> AsyncIterator[Stack]:
    async with jobs_stack(database_url, schema, ping_timeout=1.0) as stack:
        yield stack


async def register(stack: Stack, url: str, slug: str = "other") -> tuple[int, str]:
    response = await stack.api.post("/api/v1/endpoints", json={"slug": slug, "url": url})
    return response.status_code, response.json().get("error", "")


async def test_registration_errors_never_echo_what_the_target_answered(
    stack: Stack, hostile: Hostile
) -> None:
    assert await register(stack, hostile.url + "/secret") == (
        422,
        "the endpoint did not answer PING correctly (HTTP 403): does it have this "
        "environment's API key?",
    )
    for path in ["/secret-ok", "/secret-pong"]:
        code, error = await register(stack, hostile.url + path)
        assert code == 422
        assert SECRET not in error and "password" not in error, error
    assert (await register(stack, hostile.url + "/secret-ok"))[1] == (
        "the endpoint sent a malformed PING answer (not trigger.dev's PingResponse)"
    )
    async with Hostile() as landing:
        hostile.redirect_to = landing.url
        assert await register(stack, hostile.url + "/redirect") == (
            422,
            "the endpoint answered with a redirect (HTTP 302), which kongflow does not follow",
        )
        assert landing.requests == []
    assert (await register(stack, hostile.url + "/huge"))[1] == (
        "the endpoint's answer is over 4 MiB"
    )
    assert len((await stack.api.get("/api/v1/endpoints")).json()) == 1  # nothing stored


async def test_registration_does_not_tell_closed_silent_and_resetting_ports_apart(
    stack: Stack, hostile: Hostile
) -> None:
    urls = [
        f"http://127.0.0.1:{closed_port()}",
        hostile.url + "/silent",
        hostile.url + "/reset",
        hostile.url + "/hangup",
    ]
    answers = []
    for url in urls:
        code, error = await register(stack, url)
        answers.append((code, error.replace(url, "<url>")))
    assert answers == [(422, "could not reach the endpoint at <url>")] * 4


async def test_urls_with_credentials_are_refused_at_registration_and_invoke(
    stack: Stack,
) -> None:
    url = stack.endpoint_url.replace("http://", "http://user:pw@")
    code, error = await register(stack, url, "test-app")
    assert code == 400
    assert "credentials" in error and "pw" not in error
    invoke = await stack.api.post(
        "/api/v1/jobs/echo/invoke",
        json={"options": {"callbackUrl": stack.receiver_url.replace("http://", "http://u:pw@")}},
    )
    assert invoke.status_code == 400, invoke.text
    assert "credentials" in invoke.json()["error"]
    async with stack.jobs.client.pool.connection() as conn:
        cur = await conn.execute(
            f'select count(*) from "{stack.jobs.client.schema}".job_runs'  # type: ignore[arg-type]
        )
        assert await cur.fetchone() == (0,)


async def test_a_strict_server_refuses_loopback_endpoints_and_callbacks(
    database_url: str, schema: str
) -> None:
    # Only the test endpoint's own address is allowed, so that the stack can register it.
    network = NetworkPolicy.strict(["127.0.0.1/32"])
    async with jobs_stack(database_url, schema, network=network) as stack:
        port = stack.endpoint_url.rsplit(":", 1)[1]
        code, error = await register(stack, f"http://[::1]:{port}", "test-app")
        assert (code, error) == (
            400,
            "::1 is a loopback address, which this server's network policy refuses; "
            "allow it with --allow-network",
        )
        for callback in ["http://[::1]:9/hook", "http://169.254.169.254/hook"]:
            invoke = await stack.api.post(
                "/api/v1/jobs/echo/invoke", json={"options": {"callbackUrl": callback}}
            )
            assert invoke.status_code == 400, invoke.text
            assert "network policy refuses" in invoke.json()["error"]


async def test_an_execution_answer_over_the_cap_fails_the_run(
    database_url: str, schema: str
) -> None:
    async with jobs_stack(database_url, schema, endpoint_answer_limit=64 * KiB) as stack:
        stack.endpoint.answers = [(200, json.dumps({"status": "SUCCESS", "output": "x" * 100_000}))]
        run = await stack.run(await stack.test("echo"))
        assert run["status"] == "FAILURE"
        assert run["output"] == {"message": "the endpoint's answer is over 64 KiB"}
        assert stack.endpoint.executions == 1  # final, not retried


async def test_run_outputs_do_not_embed_the_endpoints_body(stack: Stack) -> None:
    stack.endpoint.answers = [
        (404, json.dumps({"db_password": SECRET})),
        (200, json.dumps({"status": "SURPRISE", "db_password": SECRET})),
    ]
    not_found = await stack.run(await stack.test("echo"))
    assert not_found["output"] == {"message": "the endpoint answered HTTP 404"}
    malformed = await stack.run(await stack.test("echo"))
    assert malformed["status"] == "FAILURE"
    assert SECRET not in json.dumps(malformed["output"])
    assert "malformed" in malformed["output"]["message"]


async def test_a_webhook_answer_over_the_cap_is_a_failed_delivery_and_retried(
    stack: Stack,
) -> None:
    stack.receiver.big_answers = 1  # 256 KiB, over the 64 KiB cap
    response = await stack.api.post(
        "/api/v1/jobs/echo/invoke", json={"options": {"callbackUrl": stack.receiver_url}}
    )
    assert (await stack.run(response.json()["runId"]))["status"] == "SUCCESS"

    async def delivered() -> bool:
        return len(stack.receiver.received) == 1

    await wait_until(delivered)
    assert stack.receiver.attempts == 2


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for rebind.test (and only that name): (cert, key) files."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=rebind.test"),
            *("-addext", "subjectAltName=DNS:rebind.test"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_verifies_the_urls_name_and_connections_are_not_shared_across_names(
    certificate: tuple[str, str],
) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    cert, key = certificate
    names: list[str | None] = []

    async def host(request: Request) -> JSONResponse:
        return JSONResponse({"host": request.headers["host"]})

    app = Starlette(routes=[Route("/", host, methods=["POST"])])
    config = uvicorn.Config(
        app, ssl_certfile=cert, ssl_keyfile=key, log_level="warning", lifespan="off"
    )
    config.load()
    assert config.ssl is not None

    def record_sni(ssl_socket: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    config.ssl.sni_callback = record_sni  # type: ignore[assignment]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def resolver(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]  # both names, the same address

    trusted = ssl.create_default_context(cafile=cert)
    try:
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.01)
        async with Outbound(NetworkPolicy.dev(), resolver=resolver, ssl_context=trusted) as client:
            answer = await client.post(f"https://rebind.test:{port}/", limit=1024)
            assert json.loads(answer.content) == {"host": f"rebind.test:{port}"}
            assert names == ["rebind.test"]
            # Same address and port, and a live connection for rebind.test in the pool: a name
            # the certificate does not cover must still fail its own TLS check.
            with pytest.raises(Unreachable, match=r"could not reach the endpoint at https://"):
                await client.post(f"https://other.test:{port}/", limit=1024)
            assert names == ["rebind.test", "other.test"]
            again = await client.post(f"https://rebind.test:{port}/", limit=1024)
            assert again.status_code == 200
            assert names == ["rebind.test", "other.test"]  # kept alive: no new handshake
    finally:
        server.should_exit = True
        await serving
        sock.close()
