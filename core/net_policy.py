"""Where tools may send HTTP requests, and how they get there.

The rules: hosts off the allow-list are refused when the tool requires it; private,
loopback, link-local and other non-global addresses are refused unless the host is
allow-listed explicitly; custom tool URLs use https unless the host is allow-listed.

Which addresses are public (`is_public_address`), for resolved addresses and for literal
hosts alike (`https://[::ffff:127.0.0.1]/` resolves to itself):

- IPv4: Python's `is_global` (the IANA special-purpose registry), and never multicast.
- IPv6 forms that carry an IPv4 address are refused when any IPv4 they carry is refused,
  so no IPv6 spelling reaches an address its IPv4 spelling cannot:
  IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16`
  (the IPv4 in bits 16-48) are decided by that IPv4 alone, so `::ffff:8.8.8.8` is
  treated exactly as `8.8.8.8`; an address whose interface identifier is ISATAP's
  (`[0-3]00:5efe:a.b.c.d`, RFC 5214) is refused when that IPv4 is, and otherwise follows
  the IPv6 rule below.
- Refused whatever they carry: IPv4-compatible `::/96` (deprecated by RFC 4291; `::` and
  `::1` included), IPv4-translated `::ffff:0:0:0/96` (RFC 2765, obsolete), local-use
  NAT64 `64:ff9b:1::/48` (RFC 8215, not global) and Teredo `2001::/32` (not global per
  IANA; its server and its obfuscated client address are checked all the same).
- Other IPv6: Python's `is_global`, and never multicast.

Translation prefixes an operator chooses itself (a NAT64 network-specific prefix) cannot
be recognised from the address; a worker behind one should resolve through DNS64
answers that stay inside the policy, or list the hosts it needs.

A host name is resolved once. The address that passed the check is pinned for the call
(`pinned`), and `PinnedBackend` connects to it and to nothing else, so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot lead anywhere new.
TLS still verifies the certificate against the host name, and Host is the host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

import httpcore
import httpx

# Resolves a host name (or address literal) to addresses, best first.
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWLIST_SETTING = "LOOPLLAMA_HTTP_ALLOWLIST"


class DestinationRefused(Exception):
    """The URL may not be called; the message says why and what to configure."""


@dataclass(frozen=True)
class Destination:
    """A checked destination: connect to `address` for `host`:`port`, nowhere else."""

    host: str  # as it goes on the wire (IDNA-encoded), the key PinnedBackend sees
    port: int
    address: str


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer, duplicates removed, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_destination(url: str, allowlist: tuple[str, ...], *,
                            require_allowlisted: bool, require_https: bool = False,
                            resolver: Resolver = system_resolver) -> Destination:
    """Check `url` against the rules and return the one address to connect to.

    The URL is parsed by httpx, the parser that will send the request, so the host that
    is checked is the host that is called.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise DestinationRefused(f"{url!r} is not a valid URL ({err})") from None
    host = parsed.host
    if parsed.scheme not in ("http", "https") or not host:
        raise DestinationRefused(f"{url!r} is not an http(s) URL")
    allowlisted = host in allowlist
    if require_allowlisted and not allowlisted:
        raise DestinationRefused(f"host {host!r} is not in the worker's {ALLOWLIST_SETTING}")
    wire_host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = await resolver(wire_host, port)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise DestinationRefused(f"host {host!r} does not resolve ({reason})") from None
    if not addresses:
        raise DestinationRefused(f"host {host!r} does not resolve")
    if not allowlisted:
        for address in addresses:
            if not is_public_address(address):
                raise DestinationRefused(
                    f"host {host!r} resolves to the non-public address "
                    f"{_described(address)}; add the host to {ALLOWLIST_SETTING} to allow it"
                )
        if require_https and parsed.scheme != "https":
            raise DestinationRefused(
                f"{url!r} uses plain http; custom tools are called over https unless their "
                f"host is in the worker's {ALLOWLIST_SETTING}"
            )
    return Destination(host=wire_host, port=port, address=addresses[0])


async def check_declared_url(url: str, allowlist: tuple[str, ...], *,
                             resolver: Resolver = system_resolver) -> None:
    """The rules for a URL declared now and called later (webhooks): https unless the
    host is allow-listed, and no non-public address unless it is.

    A host that does not resolve now is accepted: it is checked again, and pinned, when
    it is called.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise DestinationRefused(f"{url!r} is not a valid URL ({err})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DestinationRefused(f"{url!r} is not an http(s) URL")
    if parsed.host in allowlist:
        return
    if parsed.scheme != "https":
        raise DestinationRefused(
            f"{url!r} uses plain http; use https, or add the host to {ALLOWLIST_SETTING}"
        )
    port = parsed.port or 443
    try:
        addresses = await resolver(parsed.raw_host.decode("ascii"), port)
    except OSError:
        return
    for address in addresses:
        if not is_public_address(address):
            raise DestinationRefused(
                f"host {parsed.host!r} resolves to the non-public address "
                f"{_described(address)}; add the host to {ALLOWLIST_SETTING} to allow it"
            )


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# Ranges whose IPv4 decides alone, and ranges refused whatever they carry.
_DECIDED_BY_IPV4 = (_IPV4_MAPPED, _NAT64, _SIX_TO_FOUR)
_ALWAYS_REFUSED = (_IPV4_TRANSLATED, _IPV4_COMPATIBLE, _NAT64_LOCAL, _TEREDO)
_LOW_32 = 0xFFFF_FFFF


def embedded_ipv4(address: ipaddress.IPv6Address
                  ) -> tuple[tuple[str, ipaddress.IPv4Address], ...]:
    """Every IPv4 address that `address` carries, each with the form that carries it."""
    value = int(address)
    low = ipaddress.IPv4Address(value & _LOW_32)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address in _IPV4_MAPPED:
        found.append(("IPv4-mapped", low))
    elif address in _IPV4_TRANSLATED:
        found.append(("IPv4-translated", low))
    elif address in _IPV4_COMPATIBLE and value > 1:  # not :: or ::1
        found.append(("IPv4-compatible", low))
    elif address in _NAT64 or address in _NAT64_LOCAL:
        found.append(("NAT64", low))
    elif address in _SIX_TO_FOUR:
        found.append(("6to4", ipaddress.IPv4Address((value >> 80) & _LOW_32)))
    elif address in _TEREDO:
        found.append(("Teredo server", ipaddress.IPv4Address((value >> 64) & _LOW_32)))
        found.append(("Teredo client", ipaddress.IPv4Address(~value & _LOW_32)))
    # ISATAP: an interface identifier of [0-3]00:5efe followed by the IPv4, any prefix.
    if (value >> 32) & 0xFCFF_FFFF == 0x0000_5EFE:
        found.append(("ISATAP", low))
    return tuple(found)


def is_public_address(address: str) -> bool:
    """Whether tools and webhooks may connect to `address` (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global
    if any(not is_public_address(str(v4)) for _, v4 in embedded_ipv4(ip)):
        return False
    if any(ip in network for network in _ALWAYS_REFUSED):
        return False
    if any(ip in network for network in _DECIDED_BY_IPV4):
        return True
    return ip.is_global


def _described(address: str) -> str:
    """The address, with the IPv4 addresses it carries: `::ffff:7f00:1 (IPv4-mapped
    127.0.0.1)`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return address
    carried = ", ".join(f"{form} {v4}" for form, v4 in embedded_ipv4(ip))
    return f"{address} ({carried})" if carried else address


# The addresses checked for the calls running in this context, by (host, port).
_pinned: ContextVar[Mapping[tuple[str, int], str]] = ContextVar(
    "pinned_addresses", default=MappingProxyType({})
)


@contextlib.contextmanager
def pinned(destination: Destination) -> Iterator[None]:
    """Within the block, connections to the destination's host go to its checked address.

    A context variable, so concurrent calls on one worker each keep their own address.
    """
    key = (destination.host, destination.port)
    token = _pinned.set({**_pinned.get(), key: destination.address})
    try:
        yield
    finally:
        _pinned.reset(token)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses pinned by `pinned`; never resolves a name itself.

    A connection without a checked address fails, so a client built on this backend
    cannot be used around the check by mistake.
    """

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = _pinned.get().get((host.lower(), port))
        if address is None:
            raise httpcore.ConnectError(
                f"no checked address for {host}:{port}; tools connect only to checked addresses"
            )
        return await self._inner.connect_tcp(
            address, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("tools do not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
