"""Remote MCP servers over Streamable HTTP: list their tools, call one.

The API lists a server's tools when a workflow declares it; the worker makes each call
(activities/mcp_tools.py). Both go through here, so this module imports neither
temporalio nor the API. Every listing and every call opens its own session, with the
`mcp` package's client over an HTTP client of our own, and closes it afterwards.

The network rules are the custom tools' (core/net_policy.py), checked on every listing
and every call: https unless the host is in LOOPLLAMA_HTTP_ALLOWLIST, and no private,
loopback or other non-public address unless it is. The address that passed the check is
the only one connected to: the HTTP client's connection pool has a network backend that
connects to that address and refuses any other host, so a DNS answer that changes after
the check (DNS rebinding) leads nowhere new. Redirects are followed only within the
endpoint's origin (the `mcp` client's rule), so they stay on the checked address too; one
to another port (http to https on the same host) fails, as no address was checked for it.

Header values `env:NAME` are read from the environment at the time of the call, so no
secret is stored in Temporal; messages name the variable, never its value.

What can go wrong, and what the caller sees:

- `McpRefused`: the destination breaks the network rules, a header's variable is unset,
  or the server refuses the credentials (HTTP 401/403). Trying again cannot help; the
  message says what to configure.
- `McpUnavailable`: the server cannot be reached, times out, answers HTTP 5xx or breaks
  the protocol, or (when listing) lists tools LoopLlama cannot take. Worth retrying, but
  for the listing limits.
- A tool's own error (`isError`) and a server's JSON-RPC error to a call come back as a
  `ToolResult` with `is_error=True`: the agent reads them and decides.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio
import httpcore2
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    AudioContent,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    RequestParamsMeta,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from core.net_policy import (
    Destination,
    DestinationRefused,
    Resolver,
    check_destination,
    system_resolver,
)
from core.redaction import longest_first, redact, without_secrets
from core.tool_schema import tool_schema_problem, tools_size_problem
from core.tools import header_problem
from core.types import McpToolConfig, ToolResult

ENV_PREFIX = "env:"
# The most tools one server may list (as many as a declaration may repeat), and the most
# pages a listing may take, so a server that never stops paging cannot hold the API.
MAX_TOOLS = 128
MAX_LIST_PAGES = 32
# Descriptions past this are cut (the declaration's limit for a tool's description).
MAX_DESCRIPTION_CHARS = 10_000
# A call's result as the agent reads it.
MAX_RESULT_CHARS = 100_000
# The most one HTTP answer (or one event of a stream) may carry, enforced as it is read:
# a server cannot make a worker or the API hold more than this for it.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0
# Connections one session may open: its POSTs and the server's event stream.
MAX_CONNECTIONS = 8
# Errors the `mcp` client makes up when the connection fails or the server falls silent,
# unlike the errors a server sends: those go back to the agent.
_TRANSPORT_ERRORS = frozenset({CONNECTION_CLOSED, REQUEST_TIMEOUT})
# The `mcp` client's protocol probe (`server/discover`), which it retries with the older
# handshake on any error status: a failing probe says nothing about the server.
_PROBE_METHOD = "server/discover"

T = TypeVar("T")


class McpUnavailable(Exception):
    """The server cannot be used right now: unreachable, too slow, failing (HTTP 5xx),
    breaking the protocol, or listing tools past LoopLlama's limits. The message names
    the server by its origin and says why; it never carries a header value."""


class McpRefused(Exception):
    """The server may not be called as configured: the network rules refuse it, a
    header's environment variable is unset, or it refuses the credentials. The message
    says what to configure."""


def resolve_headers(headers: dict[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The headers to send: each `env:NAME` value replaced by the variable's value.

    Raises `McpRefused` naming the variable (never a value) when one is unset or empty,
    or when a value cannot be sent as an HTTP header.
    """
    resolved: dict[str, str] = {}
    for name, value in headers.items():
        if value.startswith(ENV_PREFIX):
            variable = value.removeprefix(ENV_PREFIX)
            value = environ.get(variable, "")
            if not value:
                raise McpRefused(
                    f"header {name!r} is read from the environment variable {variable}, which "
                    "is not set; set it where LoopLlama runs (the API and the workers)"
                )
        resolved[name] = value
    if problem := header_problem(resolved):
        # The problem names the header and the offending character, never the value.
        raise McpRefused(f"{problem}; check the value configured for it")
    return resolved


async def list_tools(url: str, headers: dict[str, str], *, allowlist: tuple[str, ...],
                     environ: Mapping[str, str], timeout: float = 10.0,  # noqa: ASYNC109
                     resolver: Resolver = system_resolver) -> list[McpToolConfig]:
    """Every tool the server at `url` lists (following its pages), as a definition
    keeps them.

    `timeout` bounds the whole listing. Raises `McpRefused` or `McpUnavailable`; a tool
    LoopLlama cannot offer (a schema past the custom tools' limits, a name listed
    twice, more than `MAX_TOOLS`) makes the server unusable as a whole (`McpUnavailable`
    naming the tool), rather than a server whose tools silently differ from its own list.
    """
    origin = _origin(url)
    tools, next_cursor = await _in_session(
        url, headers, _listed_tools, allowlist=allowlist, environ=environ,
        timeout=timeout, resolver=resolver,
    )
    if len(tools) > MAX_TOOLS:
        raise McpUnavailable(f"{origin} lists more than {MAX_TOOLS} tools; LoopLlama takes "
                             f"at most {MAX_TOOLS} from one server")
    if next_cursor is not None:
        raise McpUnavailable(f"{origin} lists its tools over more than {MAX_LIST_PAGES} pages")
    # Checking schemas costs up to tens of milliseconds a tool: off the event loop.
    return await asyncio.to_thread(_tool_configs, tools, origin)


async def call_tool(url: str, headers: dict[str, str], tool: str, arguments: dict[str, Any],
                    *, meta: dict[str, Any], allowlist: tuple[str, ...],
                    environ: Mapping[str, str], timeout: float = 120.0,  # noqa: ASYNC109
                    resolver: Resolver = system_resolver) -> ToolResult:
    """Call `tool` on the server at `url` with `arguments`, sending `meta` as the call's
    `_meta`, and say what it answered as the agent reads it.

    `timeout` bounds the whole call. A tool error or a server's JSON-RPC error is an
    error result; raises `McpRefused` or `McpUnavailable` otherwise (see the module).
    """

    async def call(client: Client) -> ToolResult:
        try:
            # `_meta` takes any keys beside the protocol's own.
            result = await client.call_tool(tool, arguments,
                                            meta=typing.cast(RequestParamsMeta, meta))
        except MCPError as error:
            if error.code in _TRANSPORT_ERRORS:
                raise
            return ToolResult(content=_bounded(error.message or f"error {error.code}"),
                              is_error=True)
        return ToolResult(content=_result_text(result), is_error=result.is_error)

    return await _in_session(url, headers, call, allowlist=allowlist, environ=environ,
                             timeout=timeout, resolver=resolver)


# --- One session -----------------------------------------------------------------


async def _in_session(url: str, headers: dict[str, str],
                      operation: Callable[[Client], Awaitable[T]], *,
                      allowlist: tuple[str, ...], environ: Mapping[str, str],
                      timeout: float,  # noqa: ASYNC109 - one deadline, named in messages
                      resolver: Resolver) -> T:
    """Run `operation` in a new session with the server, within `timeout` seconds."""
    resolved = resolve_headers(headers, environ)
    secrets = header_secrets(headers, resolved)
    destination = await _checked_destination(url, allowlist, resolver)
    try:
        with anyio.fail_after(timeout):
            async with (
                _pinned_client(destination, resolved, timeout) as http,
                Client(
                    streamable_http_client(url, http_client=http,
                                           max_sse_event_size=MAX_ANSWER_BYTES),
                    # Each session makes one call: nothing to reuse a cached answer for.
                    cache=None,
                ) as client,
            ):
                answer = await operation(client)
    except Exception as error:  # cancellation is not an Exception: it passes
        failure = _classified(error, _origin(url), timeout)
        raise type(failure)(redact(str(failure), secrets)) from None
    if isinstance(answer, ToolResult):
        # A server may repeat the credentials it was sent; an error may carry any.
        clean = redact if answer.is_error else without_secrets
        return typing.cast(T, answer.model_copy(
            update={"content": clean(answer.content, secrets)}))
    return answer


def header_secrets(configured: Mapping[str, str], resolved: Mapping[str, str]
                   ) -> tuple[str, ...]:
    """The values of the headers read from the environment (and each word of them, for
    `Bearer <token>`): what no answer of the server may carry on."""
    values: list[str] = []
    for name, value in configured.items():
        if value.startswith(ENV_PREFIX) and name in resolved:
            values += [resolved[name], *resolved[name].split()]
    return longest_first(values)


async def _checked_destination(url: str, allowlist: tuple[str, ...],
                               resolver: Resolver) -> Destination:
    try:
        destination = await check_destination(
            url, allowlist, require_allowlisted=False, require_https=True, resolver=resolver
        )
        if httpx.URL(url).userinfo:
            raise DestinationRefused(
                "the URL carries a user name or password; send credentials as a header "
                f"whose value is {ENV_PREFIX}NAME instead"
            )
    except DestinationRefused as refused:
        raise McpRefused(f"its URL is refused: {refused}") from None
    return destination


def _classified(error: Exception, origin: str, timeout: float) -> Exception:
    """What a failed session means for the caller (the `mcp` client and anyio raise
    exception groups: the failure that counts is inside)."""
    leaves = list(_leaves(error))
    for leaf in leaves:
        if isinstance(leaf, McpRefused | McpUnavailable):
            return leaf
    if any(isinstance(leaf, TimeoutError | httpx2.TimeoutException) for leaf in leaves):
        return McpUnavailable(f"{origin} did not answer within {timeout:g} s")
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPError):
            return McpUnavailable(f"{origin} could not be reached ({type(leaf).__name__}: "
                                  f"{leaf})")
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return McpUnavailable(f"{origin} answered with an error: {_bounded(leaf.message)}")
    return McpUnavailable(f"{origin} broke the MCP protocol ({type(leaves[0]).__name__})")


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _origin(url: str) -> str:
    """How messages name the server: scheme, host and port, never a path or query."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "the MCP server"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


# --- The HTTP client ---------------------------------------------------------------


def _pinned_client(destination: Destination, headers: dict[str, str],
                   timeout: float) -> httpx2.AsyncClient:
    """An HTTP client for one session: to the checked address only, with the resolved
    headers, no proxy from the environment (a proxy would resolve names itself) and no
    redirects of its own."""
    return httpx2.AsyncClient(
        transport=_PinnedTransport(destination),
        headers=headers,
        timeout=httpx2.Timeout(timeout, connect=min(CONNECT_TIMEOUT_SECONDS, timeout)),
        follow_redirects=False,
        trust_env=False,
    )


class _PinnedTransport(httpx2.AsyncHTTPTransport):
    """Connects to the destination's checked address, bounds every answer, and turns
    the statuses that decide a call's fate into `McpRefused` and `McpUnavailable`."""

    def __init__(self, destination: Destination) -> None:
        context = _tls_context()
        super().__init__(verify=context, trust_env=False)
        # httpx2 takes no network backend, so its connection pool is rebuilt with one
        # (as activities/http_tools.py does for httpx); tests/test_mcp_client.py fails
        # if this stops taking effect.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=context,
            max_connections=MAX_CONNECTIONS,
            network_backend=_PinnedBackend(destination),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        failure = _status_failure(request, response.status_code)
        if failure is not None:
            await response.aclose()
            raise failure
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _BoundedStream(response.stream)
        return response


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One context for every session: loading the trusted certificates costs
    milliseconds, and a context serves any number of connections."""
    return httpx2.create_ssl_context(trust_env=False)


def _status_failure(request: httpx2.Request, status: int) -> Exception | None:
    """The failure an answer to a message means, or None to leave it to the `mcp` client
    (which reads the JSON-RPC error a 4xx may carry, and retries its probe)."""
    if request.method != "POST" or request.headers.get("mcp-method") == _PROBE_METHOD:
        return None
    origin = _origin(str(request.url))
    if status in (401, 403):
        return McpRefused(f"{origin} refused the credentials (HTTP {status}); check the "
                          "headers configured for the server and the variables they read")
    if status >= 500:
        return McpUnavailable(f"{origin} answered HTTP {status}")
    return None


class _AnswerTooLarge(httpx2.StreamError):
    """An answer past `MAX_ANSWER_BYTES`; the `mcp` client reports it as a parse error."""


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise _AnswerTooLarge(
                    f"the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Opens connections to the destination's checked address, for its host and port
    only; never resolves a name itself."""

    def __init__(self, destination: Destination) -> None:
        self._destination = destination
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if (host.lower(), port) != (self._destination.host, self._destination.port):
            raise httpcore2.ConnectError(
                f"no checked address for {host}:{port}; MCP servers are reached only at "
                "the address checked for their URL"
            )
        return await self._inner.connect_tcp(
            self._destination.address, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore2's interface
        socket_options: typing.Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("MCP servers are not reached over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# --- Listings and results ----------------------------------------------------------


async def _listed_tools(client: Client) -> tuple[list[Tool], str | None]:
    """The tools listed, page after page, up to one past `MAX_TOOLS` or `MAX_LIST_PAGES`
    pages, and the cursor of the page not read (None when the listing is complete)."""
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None or len(tools) > MAX_TOOLS:
            break
    return tools, cursor


def _tool_configs(tools: list[Tool], origin: str) -> list[McpToolConfig]:
    """The listed tools as a definition keeps them; `McpUnavailable` for one that
    LoopLlama cannot offer."""
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise McpUnavailable(f"{origin} lists the tool {tool.name!r} twice")
        seen.add(tool.name)
        if problem := tool_schema_problem(tool.input_schema):
            raise McpUnavailable(f"{origin} lists the tool {tool.name!r} with an input schema "
                                 f"LoopLlama cannot use: {problem}")
    if problem := tools_size_problem([{"input_schema": tool.input_schema} for tool in tools]):
        raise McpUnavailable(f"{origin} lists tools LoopLlama cannot take together: {problem}")
    return [
        McpToolConfig(
            name=tool.name,
            description=_cut(tool.description or "", MAX_DESCRIPTION_CHARS),
            input_schema=tool.input_schema,
        )
        for tool in tools
    ]


def _result_text(result: CallToolResult) -> str:
    """A call's result as the agent reads it: text as it is, other content described."""
    parts = [_described(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    return _bounded("\n".join(parts) or "(the tool returned no content)")


def _described(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.type}: {block.mime_type}, {_size(block.data)}]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return f"[resource: {resource.uri}]\n{resource.text}"
        return f"[resource: {resource.uri}, {resource.mime_type or 'binary'}, " \
               f"{_size(resource.blob)}]"
    if isinstance(block, ResourceLink):
        return f"[resource: {block.uri}]"
    # A content type newer than this client: said, not failed on.
    return f"[{getattr(block, 'type', 'unknown')} content]"


def _size(base64_data: str) -> str:
    """The size of base64-encoded data, decoded: `512 bytes`, `12 KB`, `3.4 MB`."""
    size = len(base64_data) * 3 // 4 - base64_data[-2:].count("=")
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size // 1024} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _bounded(text: str) -> str:
    """`text`, cut at `MAX_RESULT_CHARS` with a note saying so."""
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return (text[:MAX_RESULT_CHARS] + f"\n[cut: the result has {len(text)} characters; "
            f"the first {MAX_RESULT_CHARS} are shown]")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
