"""The network policy, the URL checks made before any connection (with made-up resolvers: no
name is looked up and nothing is sent), and webhook signature checks."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

import pytest

from kongflow.service.network import NetworkPolicy, address_kind, parse_networks
from kongflow.service.notifications import sign, verify
from kongflow.service.outbound import (
    Unreachable,
    UrlRefused,
    check_url,
)
from kongflow.service.service import JobsOptions

# -- the policy -------------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.10.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("169.254.169.254", "a link-local address"),  # the cloud metadata service
    ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("100.64.0.1", "a carrier-grade NAT address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 address"),  # 169.254.169.254 through NAT64
    ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "a link-local address"),
    ("::ffff:10.0.0.1", "a private address"),
    ("192.0.2.1", "a reserved address"),
    ("198.18.0.1", "a reserved address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("2001:db8::1", "a reserved address"),
    ("2002:7f00:1::1", "a reserved address"),  # 6to4 of 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_the_strict_policy_refuses_every_special_range(address: str, reason: str) -> None:
    assert NetworkPolicy.strict().refusal(address) == reason
    assert JobsOptions().network.refusal(address) == reason  # the service's default


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert NetworkPolicy.strict().refusal(address) is None
    assert address_kind(ipaddress.ip_address(address)) is None


def test_allowed_networks_override_the_refusals_of_the_addresses_they_contain() -> None:
    policy = NetworkPolicy.strict(["10.0.0.0/8", "169.254.169.254/32"])
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("::ffff:10.1.2.3") is None  # the same address, IPv4-mapped
    assert policy.refusal("169.254.169.254") is None  # any kind, when asked for explicitly
    assert policy.refusal("169.254.169.253") == "a link-local address"
    assert policy.refusal("192.168.1.1") == "a private address"
    assert policy.refusal("127.0.0.1") == "a loopback address"
    assert NetworkPolicy.strict(["fd00::/8"]).refusal("fd00::5") is None


def test_development_allows_loopback_and_private_networks_only() -> None:
    dev = NetworkPolicy.dev()
    for address in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.1", "192.168.0.10", "fd00::1"]:
        assert dev.refusal(address) is None, address
    for address in ["169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "100.64.0.1"]:
        assert dev.refusal(address) is not None, address
    assert dev.development and not NetworkPolicy.strict().development


def test_the_policy_is_frozen_and_validated() -> None:
    policy = NetworkPolicy.strict(["10.0.0.0/8, 192.168.0.0/16", "10.0.0.0/8", "203.0.113.7"])
    assert [str(n) for n in policy.allow_networks] == [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "203.0.113.7/32",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.development = True  # type: ignore[misc]
    with pytest.raises(ValueError, match="'nope' is not a network"):
        NetworkPolicy.strict(["nope"])
    with pytest.raises(ValueError, match=r"host bits set: did you mean 10\.0\.0\.0/8"):
        parse_networks(["10.0.0.1/8"])
    with pytest.raises(TypeError):
        NetworkPolicy(allow_networks="10.0.0.0/8")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        NetworkPolicy(development="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="endpoint_answer_limit"):
        JobsOptions(endpoint_answer_limit=0)


# -- URLs -------------------------------------------------------------------------------------


async def no_resolver(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} should not have been resolved")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://user:pw@127.0.0.1:9/", "credentials"),
        ("https://user@example.invalid/", "credentials"),
        ("ftp://127.0.0.1/", "not ftp:"),
        ("file:///etc/passwd", "not file:"),
        ("127.0.0.1:9", "has no scheme"),
        ("//127.0.0.1:9/", "has no scheme"),
        ("http://", "no host"),
    ],
)
async def test_urls_kongflow_will_not_call_are_refused_before_resolving(
    url: str, message: str
) -> None:
    with pytest.raises(UrlRefused, match=message) as refused:
        await check_url(url, NetworkPolicy.dev(), no_resolver)
    assert isinstance(refused.value, ValueError)
    assert "pw" not in str(refused.value)


async def test_a_host_is_refused_if_any_address_it_resolves_to_is() -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        return {"mixed.test": ["93.184.216.34", "10.0.0.1"], "public.test": ["93.184.216.34"]}[host]

    with pytest.raises(UrlRefused) as refused:
        await check_url("https://mixed.test/api", NetworkPolicy.strict(), resolver)
    assert str(refused.value) == (
        "mixed.test resolves to a private address, which this server's network policy "
        "refuses; allow it with --allow-network"
    )
    await check_url("https://public.test/api", NetworkPolicy.strict(), resolver)
    await check_url("https://mixed.test/", NetworkPolicy.strict(["10.0.0.0/8"]), resolver)
    with pytest.raises(UrlRefused, match=r"169\.254\.169\.254 is a link-local address"):
        await check_url("http://169.254.169.254/latest/meta-data/", NetworkPolicy.dev())
    with pytest.raises(UrlRefused, match="is an unspecified address"):
        await check_url("http://0.0.0.0:8030/", NetworkPolicy.dev())
    with pytest.raises(UrlRefused, match="is a multicast address"):
        await check_url("http://224.0.0.1/", NetworkPolicy.dev())
    with pytest.raises(UrlRefused, match="is a private address"):
        await check_url("http://10.0.0.1/", NetworkPolicy.strict())
    with pytest.raises(UrlRefused, match=r"::ffff:127\.0\.0\.1 is a loopback address"):
        await check_url("http://[::ffff:127.0.0.1]:9/", NetworkPolicy.strict())


async def test_a_host_that_does_not_resolve_is_unreachable() -> None:
    async def resolver(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(Unreachable, match=r"could not reach the endpoint at http://gone\.test/"):
        await check_url("http://gone.test/", NetworkPolicy.strict(), resolver)


# -- signatures --------------------------------------------------------------------------------


def test_verify_is_false_never_an_error_for_a_bad_header() -> None:
    key, body = "tr_dev_" + "k" * 24, b'{"id": 1}'
    good = sign(key, body)
    assert verify(key, body, good)
    assert verify(key, body, good.upper())
    assert verify(key, body, good.encode())
    for bad in [None, "", " ", "é" * 64, "zz" * 32, good[:-1], good + "0", b"\xff" * 64, "sha256"]:
        assert verify(key, body, bad) is False, bad  # type: ignore[arg-type]
    assert not verify(key, body + b" ", good)
