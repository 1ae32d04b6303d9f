"""HTTP tools: the built-in `http_request` and the custom tools a workflow declares.

Both connect only to the address that passed the network rules (core/net_policy.py),
never follow redirects, cut responses at 64 KiB and give up after 15 s. A model chooses
the URL, method, body and ordinary headers of an `http_request`; the worker owns the
rest: Host, Idempotency-Key, message framing and hop-by-hop headers, and credentials.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpcore
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from core.contract import CUSTOM_TOOL, HTTP_REQUEST
from core.net_policy import (
    Destination,
    DestinationRefused,
    PinnedBackend,
    Resolver,
    check_destination,
    pinned,
    system_resolver,
)
from core.tools import header_problem
from core.tracing import annotate_span
from core.types import ToolCall, ToolResult

TOOL_UNAVAILABLE = "ToolUnavailable"
TOOL_TIMEOUT = "ToolTimeout"
MAX_RESPONSE_BYTES = 64 * 1024
TIMEOUT_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)

# Headers a model may not set on an `http_request`: the worker sets them (Host,
# Idempotency-Key, framing), they steer the connection rather than the request
# (hop-by-hop), or they carry credentials.
_WORKER_OWNED = frozenset({"host", "idempotency-key", "content-length"})
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_CREDENTIALS = frozenset({"authorization", "cookie", "cookie2", "set-cookie"})
_CREDENTIAL_WORDS = ("auth", "cookie", "token", "secret", "password", "credential",
                     "api-key", "apikey", "api_key")


def tool_http_client(*, verify: ssl.SSLContext | bool = True,
                     network_backend: httpcore.AsyncNetworkBackend | None = None
                     ) -> httpx.AsyncClient:
    """The worker's one HTTP client for tools.

    It connects only to addresses pinned by the network check, follows no redirects (a
    redirect could lead past the allow-list) and ignores proxy settings from the
    environment (a proxy would resolve names itself). `network_backend` is what actually
    opens connections (tests pass one that records them).
    """
    return httpx.AsyncClient(
        transport=_PinnedTransport(verify, PinnedBackend(network_backend)),
        follow_redirects=False,
        trust_env=False,
        timeout=REQUEST_TIMEOUT,
    )


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, verify: ssl.SSLContext | bool, backend: PinnedBackend) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=context, trust_env=False)
        # httpx takes no network backend, so its connection pool is rebuilt with one;
        # tests/test_tool_safety.py fails if this stops taking effect.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            # As many as the worker runs tool calls at once (LOOPLLAMA_WORKER_MAX_ACTIVITIES).
            max_connections=1000,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


def refused_result(refused: DestinationRefused) -> ToolResult:
    """What the agent reads when a request's destination is refused."""
    return ToolResult(content=f"Request refused: {refused}.", is_error=True)


def split_headers(requested: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The model's headers that may be sent, and the names of those dropped."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in requested.items():
        lowered = name.lower()
        if (lowered in _WORKER_OWNED or lowered in _HOP_BY_HOP or lowered in _CREDENTIALS
                or lowered.startswith("proxy-")
                or any(word in lowered for word in _CREDENTIAL_WORDS)):
            dropped.append(name)
        else:
            kept[name] = str(value)
    return kept, dropped


class HttpTools:
    """Both HTTP tools share one client per worker and the worker's allow-list.

    `client` must come from `tool_http_client`: it connects only to checked addresses.
    """

    def __init__(self, client: httpx.AsyncClient, allowlist: tuple[str, ...], *,
                 resolver: Resolver = system_resolver,
                 timeout_seconds: float = TIMEOUT_SECONDS,
                 connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS) -> None:
        self._client = client
        self._allowlist = allowlist
        self._resolver = resolver
        self._timeout_seconds = timeout_seconds
        self._connect_timeout_seconds = min(connect_timeout_seconds, timeout_seconds)
        self._timeout = httpx.Timeout(timeout_seconds, connect=self._connect_timeout_seconds)

    @activity.defn(name=HTTP_REQUEST)
    async def http_request(self, call: ToolCall) -> ToolResult:
        """Any method to an allow-listed host; the status and the body's start come back."""
        url = str(call.input["url"])
        headers, dropped = split_headers(dict(call.input.get("headers") or {}))
        try:
            # This is the check that counts: the run asks `refusal` only before an
            # approval, and the host's addresses may have changed since.
            destination = await self._request_destination(url, headers)
        except DestinationRefused as refused:
            return refused_result(refused)
        request = self._client.build_request(
            str(call.input.get("method", "GET")),
            url,
            headers={**headers, "Idempotency-Key": call.idempotency_key},
            content=call.input.get("body"),
            timeout=self._timeout,
        )
        status, body = await self._send(request, destination)
        content = f"HTTP {status}\n{body}"
        if dropped:
            content = (f"Not sent (the worker sets or withholds these headers): "
                       f"{', '.join(dropped)}.\n{content}")
        return ToolResult(content=content, is_error=status >= 400)

    @activity.defn(name=CUSTOM_TOOL)
    async def custom_tool(self, call: ToolCall) -> ToolResult:
        """POST the tool input as JSON to the tool's endpoint, with an idempotency key.

        5xx answers and network errors are retried with the same key, so a receiver that
        honours `Idempotency-Key` acts once; 4xx answers go back to the model.
        """
        annotate_span({"loopllama.tool": call.name})
        if call.custom is None:
            raise ApplicationError(f"{call.name} is not a custom tool", non_retryable=True)
        try:
            destination = await self._custom_destination(call.custom.url)
        except DestinationRefused as refused:
            return refused_result(refused)
        request = self._client.build_request(
            "POST", call.custom.url, json=call.input,
            headers={"Idempotency-Key": call.idempotency_key},
            timeout=self._timeout,
        )
        status, body = await self._send(request, destination)
        if status >= 500:
            raise ApplicationError(
                f"{call.name} answered HTTP {status}", type=TOOL_UNAVAILABLE
            )
        return ToolResult(content=body or f"HTTP {status}", is_error=status >= 400)

    async def refusal(self, call: ToolCall) -> ToolResult | None:
        """What `http_request` or the custom tool would answer `call` without sending
        anything, if its destination is refused; None when it would send."""
        try:
            if call.custom is not None:
                await self._custom_destination(call.custom.url)
            else:
                headers, _ = split_headers(dict(call.input.get("headers") or {}))
                await self._request_destination(str(call.input["url"]), headers)
        except DestinationRefused as refused:
            return refused_result(refused)
        return None

    async def _request_destination(self, url: str, headers: dict[str, str]) -> Destination:
        if problem := header_problem(headers):
            raise DestinationRefused(problem)
        destination = await check_destination(
            url, self._allowlist, require_allowlisted=True, resolver=self._resolver
        )
        if httpx.URL(url).userinfo:
            raise DestinationRefused(
                "the URL carries a user name or password; tools do not send credentials"
            )
        return destination

    async def _custom_destination(self, url: str) -> Destination:
        return await check_destination(url, self._allowlist, require_allowlisted=False,
                                       require_https=True, resolver=self._resolver)

    async def _send(self, request: httpx.Request,
                    destination: Destination) -> tuple[int, str]:
        what = f"{request.method} {request.url.host}"
        annotate_span({"http.request.method": request.method, "server.address": request.url.host})
        try:
            async with heartbeating(), asyncio.timeout(self._timeout_seconds):
                with pinned(destination):
                    response = await self._client.send(request, stream=True)
                try:
                    body = await _read_bounded(response)
                finally:
                    await response.aclose()
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            # Nothing was sent, so trying again is safe.
            raise ApplicationError(
                f"{what} timed out after {self._connect_timeout_seconds:g} s connecting",
                type=TOOL_TIMEOUT,
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            # The receiver may be acting on the request: no blind retry, the agent decides.
            raise ApplicationError(
                f"{what} timed out after {self._timeout_seconds:g} s without a complete "
                "answer; it may or may not have acted on the request",
                type=TOOL_TIMEOUT,
                non_retryable=True,
            ) from None
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"{what} failed ({type(err).__name__})", type=TOOL_UNAVAILABLE
            ) from None
        annotate_span({"http.response.status_code": response.status_code})
        return response.status_code, body


async def _read_bounded(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    text = b"".join(chunks)[:MAX_RESPONSE_BYTES].decode(response.encoding or "utf-8", "replace")
    return text + ("\n[truncated]" if size >= MAX_RESPONSE_BYTES else "")
