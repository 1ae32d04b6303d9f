"""Where tools may send HTTP requests: the allow-list and the private-address rule."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class DestinationRefused(Exception):
    """The URL may not be called; the message says why and what to configure."""


async def check_destination(url: str, allowlist: tuple[str, ...], *,
                            require_allowlisted: bool) -> None:
    """Refuse hosts off the allow-list (when required) and non-public addresses.

    Private, loopback, link-local and other non-global addresses are refused unless the
    host is allow-listed explicitly, so a model cannot be talked into probing the
    worker's own network.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DestinationRefused(f"{url!r} is not an http(s) URL")
    allowlisted = host in allowlist
    if require_allowlisted and not allowlisted:
        raise DestinationRefused(
            f"host {host!r} is not in the worker's LOOPLLAMA_HTTP_ALLOWLIST"
        )
    if allowlisted:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DestinationRefused(f"host {host!r} does not resolve ({err.strerror})") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DestinationRefused(
                f"host {host!r} resolves to the non-public address {address}; add the host "
                "to LOOPLLAMA_HTTP_ALLOWLIST to allow it"
            )
