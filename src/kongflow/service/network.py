"""Which addresses kongflow may call: the network policy every outbound call is checked
against (`kongflow.service.outbound` applies it). A URL is someone else's input, and kongflow
sits next to its database, often in a cloud network with a metadata service: by default only
ordinary public addresses may be called."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), kind) for cidr, kind in rows)


# What an address is, when it is not an ordinary public one: the first row containing it names
# it. Everything here is refused unless allowed; `NetworkPolicy.dev()` allows loopback and
# private. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged as the IPv4 address they reach.
_SPECIAL = _table(
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # includes the cloud metadata service, 169.254.169.254
    ("224.0.0.0/4", "multicast"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),  # a provider's internal network, not the internet
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),  # documentation
    ("198.51.100.0/24", "reserved"),  # documentation
    ("203.0.113.0/24", "reserved"),  # documentation
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("192.88.99.0/24", "reserved"),  # 6to4 relays
    ("240.0.0.0/4", "reserved"),  # future use, and 255.255.255.255 broadcast
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("fc00::/7", "private"),  # unique local addresses
    ("fec0::/10", "reserved"),  # site-local, deprecated
    ("::/96", "reserved"),  # IPv4-compatible, deprecated
    ("::ffff:0:0:0/96", "reserved"),  # IPv4-translated
    ("64:ff9b::/96", "NAT64"),  # reaches any IPv4 address through a translator, internal ones too
    ("64:ff9b:1::/48", "NAT64"),
    ("100::/64", "reserved"),  # discard-only
    ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo among them
    ("2001:db8::/32", "reserved"),  # documentation
    ("3fff::/20", "reserved"),  # documentation
    ("2002::/16", "reserved"),  # 6to4: tunnels to an embedded IPv4 address
)
_DEVELOPMENT_ALLOWS = frozenset({"loopback", "private"})


def address_kind(address: IPAddress) -> str | None:
    """What kind of special address this is ("loopback", "private", ...), or None for an
    ordinary public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network, kind in _SPECIAL:
        if address.version == network.version and address in network:
            return kind
    return None if address.is_global else "reserved"


def parse_networks(items: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Networks from CIDRs ("10.0.0.0/8"), single addresses, or comma-separated lists of them.
    Raises ValueError naming the item that is not one."""
    networks: list[IPNetwork] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(item)
            continue
        if not isinstance(item, str):
            raise TypeError(f"a network is a string such as '10.0.0.0/8', not {item!r}")
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError:
                try:
                    loose = ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(
                        f"{part!r} is not a network: write it as CIDR (e.g. 10.0.0.0/8) or as "
                        "one address"
                    ) from None
                raise ValueError(f"{part!r} has host bits set: did you mean {loose}?") from None
    return tuple(dict.fromkeys(networks))


@dataclass(frozen=True)
class NetworkPolicy:
    """Which addresses kongflow may call.

    By default only ordinary public addresses: loopback, link-local (the cloud metadata
    service), multicast, unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7),
    carrier-grade NAT, NAT64 and the other reserved ranges are refused. `allow_networks` opens
    the addresses they contain, whatever kind those are; `development` also allows loopback and
    private addresses (`kongflow dev`, where the endpoint runs on the same machine)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    development: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.allow_networks, str):
            raise TypeError("allow_networks is a tuple of networks, not one string")
        object.__setattr__(self, "allow_networks", parse_networks(self.allow_networks))
        if not isinstance(self.development, bool):
            raise TypeError(f"development is True or False, not {self.development!r}")

    @classmethod
    def strict(cls, allow_networks: Iterable[str | IPNetwork] = ()) -> NetworkPolicy:
        """Public addresses, and those in `allow_networks`."""
        return cls(parse_networks(allow_networks))

    @classmethod
    def dev(cls, allow_networks: Iterable[str | IPNetwork] = ()) -> NetworkPolicy:
        """Also loopback and private networks: for development on one machine."""
        return cls(parse_networks(allow_networks), development=True)

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why this policy refuses `address` ("a loopback address"), or None if it may be
        called."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address)
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        for network in self.allow_networks:
            if any(c.version == network.version and c in network for c in candidates):
                return None
        kind = address_kind(address)
        if kind is None or (self.development and kind in _DEVELOPMENT_ALLOWS):
            return None
        return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"

    def describe(self) -> str:
        """The policy in a few words, for a startup message."""
        allowed = "public addresses"
        if self.development:
            allowed += ", loopback and private networks"
        if self.allow_networks:
            allowed += " and " + ", ".join(str(n) for n in self.allow_networks)
        return allowed
