"""Every call kongflow makes to a URL a user gave it (PING, INDEX_ENDPOINT, EXECUTE_JOB, run
callbacks, and whatever else is added later) goes through one `Outbound`: one pooled HTTP client
and one network policy.

A URL is someone else's input, and kongflow's network position (next to its database, often in
a cloud network with a metadata service) is worth more than the URL's author has. So:
- the host is resolved, every address it resolves to is checked against the `NetworkPolicy`,
  and the connection is made to a checked address (no second lookup an attacker's DNS could
  answer differently); TLS still verifies the name in the URL, and connections are pooled by
  that name, so a connection made for one name is never reused for another;
- redirects are never followed, URLs with credentials and schemes other than http(s) are
  refused, and answers are read as a stream, up to a size cap, whatever they claim;
- errors say what went wrong in words fit for an API client: never what the target answered,
  and one message for a closed port, a silent one and a reset (the details go to the log).

The policy itself is `kongflow.service.network`. The transport, the capped reading and the
error mapping stay in this one module: each is only safe together with the others."""

from __future__ import annotations

import asyncio
import ipaddress
import json as jsonlib
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kongflow.engine.errors import KongflowError
from kongflow.extras import MissingExtra

try:
    import httpcore
    import httpx
except ImportError as exc:  # a core install: the jobs service is the 'service' extra
    raise MissingExtra("service", "the jobs service", ["httpx"]) from exc

from kongflow.service.network import IPAddress, NetworkPolicy

log = logging.getLogger("kongflow.outbound")

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`await resolver(host, port)`: the addresses `host` resolves to, as strings."""

KiB = 1024
MiB = 1024 * KiB

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


# -- errors ---------------------------------------------------------------------------------


class OutboundError(KongflowError):
    """A call to a user's URL failed. The message is fit for an API client: it never holds
    what the target answered."""


class UrlRefused(OutboundError, ValueError):
    """kongflow will not call this URL: not http(s), credentials in it, or a host the network
    policy refuses. Raised before any connection is made."""


class Unreachable(OutboundError):
    """No usable answer came: the host did not resolve, the connection was refused or reset,
    or nothing answered in time. One message for all of them, so that answers do not tell a
    closed port from a silent one."""

    def __init__(self, url: str, target: str = "endpoint") -> None:
        super().__init__(f"could not reach the {target} at {url}")
        self.url = url


class TimedOut(Unreachable):
    """Connected, but the answer did not come (completely) within the timeout."""

    def __init__(self, url: str, target: str = "endpoint", timeout: float = 0.0) -> None:
        super().__init__(url, target)
        self.timeout = timeout


class BadAnswer(OutboundError):
    """The target answered, with something kongflow does not take."""


class Redirected(BadAnswer):
    def __init__(self, status_code: int, target: str = "endpoint") -> None:
        super().__init__(
            f"the {target} answered with a redirect (HTTP {status_code}), which kongflow does "
            "not follow"
        )
        self.status_code = status_code


class AnswerTooLarge(BadAnswer):
    def __init__(self, limit: int, target: str = "endpoint") -> None:
        super().__init__(f"the {target}'s answer is over {format_size(limit)}")
        self.limit = limit


def format_size(size: int) -> str:
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


# -- URLs and addresses ---------------------------------------------------------------------


def check_url_form(url: str) -> httpx.URL:
    """The URL, parsed as it will be requested; UrlRefused unless it is a plain http(s) URL
    with a host and no credentials."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise UrlRefused("not a valid URL") from None
    if not parsed.scheme:
        raise UrlRefused(f"{url} has no scheme: only http:// and https:// URLs can be called")
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs can be called, not {parsed.scheme}:")
    if parsed.userinfo:
        # The URL is left out of the message: it holds the credentials.
        raise UrlRefused(
            "URLs with credentials (user:password@host) are refused: kongflow authenticates "
            "its calls itself (the environment's API key, signed callbacks)"
        )
    if not parsed.raw_host:
        raise UrlRefused(f"{url} has no host")
    return parsed


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves `host` to (getaddrinfo, off the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Unresolved(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    """What the target answered, its body read up to the call's size cap."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


# -- the transport: connections to checked addresses only --------------------------------------


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy allows: the host is resolved here,
    each address checked, and the socket connected to a checked one. httpcore calls this with
    the URL's host, and does TLS (SNI, certificate check) and pooling by that name."""

    def __init__(self, addresses: Callable[[str, int], Awaitable[list[IPAddress]]]) -> None:
        self._addresses = addresses
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout}s") from None
        except _Unresolved as exc:
            raise httpcore.ConnectError(str(exc)) from None
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:  # in the resolver's order, the next one if one fails
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host} took over {timeout}s")
            try:
                return await self._backend.connect_tcp(
                    str(address), port, left, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("kongflow does not call unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connection pool given the checking network backend (httpx has
    no parameter for it; the pool is what its transport sends every request through)."""

    def __init__(
        self,
        backend: httpcore.AsyncNetworkBackend,
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


# -- decoding with a cap ----------------------------------------------------------------------


class _Decoder:
    """Content-Encoding undone with the output bounded, so a small compressed answer cannot
    expand past the cap in memory (gzip and deflate; kongflow asks for nothing else)."""

    def __init__(self, encoding: str, target: str) -> None:
        self.target = target
        name = encoding.strip().lower()
        if name in ("", "identity"):
            self._zlib = None
        elif name in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
        else:
            raise BadAnswer(
                f"the {target} answered with Content-Encoding {encoding[:40]!r}, which kongflow "
                "did not ask for"
            )

    def feed(self, data: bytes, room: int) -> bytes:
        """At most `room` bytes of decoded output."""
        if self._zlib is None:
            return data[:room]
        try:
            return self._zlib.decompress(data, room)
        except zlib.error:
            raise BadAnswer(f"the {self.target}'s answer is not validly compressed") from None


async def _read_capped(response: httpx.Response, limit: int, target: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(limit, target)
    decoder = _Decoder(response.headers.get("content-encoding", ""), target)
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        piece = decoder.feed(raw, limit - size + 1)
        size += len(piece)
        if size > limit:
            raise AnswerTooLarge(limit, target)
        chunks.append(piece)
    return b"".join(chunks)


async def check_url(
    url: str,
    policy: NetworkPolicy,
    resolver: Resolver = system_resolver,
    *,
    timeout: float = 10.0,
    target: str = "endpoint",
) -> None:
    """May this URL be called? UrlRefused (a ValueError) if not: its form, or an address its
    host resolves to, is refused. Unreachable if the host does not resolve within `timeout`.
    Makes no connection."""
    parsed = check_url_form(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout):
            await checked_addresses(parsed.raw_host.decode("ascii"), port, policy, resolver)
    except (TimeoutError, _Unresolved) as exc:
        log.debug("%s does not resolve: %r", url, exc)
        raise Unreachable(url, target) from None


def _literal_address(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return []


async def checked_addresses(
    host: str, port: int, policy: NetworkPolicy, resolver: Resolver = system_resolver
) -> list[IPAddress]:
    """Every address `host` resolves to, if the policy allows all of them: one refused
    address refuses the host (a name that resolves both ways is a name an attacker can steer
    to the refused one). UrlRefused if refused; _Unresolved if it does not resolve."""
    literal = host.strip("[]")
    addresses = _literal_address(literal)
    is_literal = bool(addresses)
    if not is_literal:
        try:
            found = await resolver(host, port)
            addresses = list(
                dict.fromkeys(ipaddress.ip_address(str(a).split("%")[0]) for a in found)
            )
        except (OSError, UnicodeError, ValueError) as exc:
            raise _Unresolved(f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise _Unresolved(f"{host} has no address")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            log.info("refused %s: %s is %s", host, address, reason)
            verb = "is" if is_literal else "resolves to"
            raise UrlRefused(
                f"{literal} {verb} {reason}, which this server's network policy refuses; "
                "allow it with --allow-network"
            )
    return addresses


# -- the client -------------------------------------------------------------------------------


class Outbound:
    """The one way kongflow calls users' URLs: `await outbound.request("POST", url, ...)`.

    Holds one pooled HTTP client (keep-alive), for the whole service; close it with
    `aclose()`. `resolver` replaces the system's name resolution (tests map made-up names);
    `ssl_context` the default certificate verification (the system's CAs, or SSL_CERT_FILE)."""

    def __init__(
        self,
        policy: NetworkPolicy | None = None,
        *,
        resolver: Resolver | None = None,
        timeout: float = 10.0,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy if policy is not None else NetworkPolicy.strict()
        self.resolver = resolver or system_resolver
        self.timeout = timeout
        transport = _CheckedTransport(
            _CheckedBackend(self._checked_addresses), limits or _LIMITS, ssl_context
        )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"accept-encoding": "gzip, deflate", "user-agent": "kongflow"},
        )

    async def check_url(self, url: str, *, target: str = "endpoint") -> None:
        """`check_url` under this client's policy, resolver and timeout."""
        await check_url(url, self.policy, self.resolver, timeout=self.timeout, target=target)

    async def request(
        self,
        method: str,
        url: str,
        *,
        limit: int,
        target: str = "endpoint",
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> Answer:
        """Call `url` and read its answer, up to `limit` bytes (decoded).

        `timeout` (default: the client's) bounds the whole call, answer included, so an answer
        sent a byte at a time cannot hold it open. `target` names the callee in error messages
        ("endpoint", "subscriber"). Raises UrlRefused, Unreachable (TimedOut when connected but
        not answered in time), Redirected for any 3xx, AnswerTooLarge, BadAnswer."""
        check_url_form(url)
        timeout = self.timeout if timeout is None else timeout
        if json is not None:
            content = jsonlib.dumps(json, separators=(",", ":")).encode()
            headers = {"content-type": "application/json"} | (headers or {})
        request = self._http.build_request(
            method, url, headers=headers, content=content, timeout=timeout
        )
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.send(request, stream=True)
                try:
                    if 300 <= response.status_code < 400:
                        raise Redirected(response.status_code, target)
                    body = await _read_capped(response, limit, target)
                finally:
                    await response.aclose()
        except TimeoutError:
            log.debug("%s %s: no complete answer within %ss", method, url, timeout)
            raise TimedOut(url, target, timeout) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.debug("%s %s: %r", method, url, exc)
            raise Unreachable(url, target) from None
        except httpx.TimeoutException as exc:
            log.debug("%s %s: %r", method, url, exc)
            raise TimedOut(url, target, timeout) from None
        except httpx.HTTPError as exc:
            log.debug("%s %s: %r", method, url, exc)
            raise Unreachable(url, target) from None
        except UrlRefused as exc:
            log.warning("%s %s refused at connection: %s", method, url, exc)
            raise
        return Answer(response.status_code, response.headers, body)

    async def post(self, url: str, *, limit: int, **options: Any) -> Answer:
        return await self.request("POST", url, limit=limit, **options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Outbound:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        return await checked_addresses(host, port, self.policy, self.resolver)
