"""A real MCP server (the `mcp` package's `MCPServer`) over Streamable HTTP on 127.0.0.1.

uvicorn serves it in a background thread. It records every `tools/call` it receives
(tool, arguments, `_meta`, Authorization header), can demand an Authorization value
(401 otherwise), answer every request with one HTTP status, list its tools a page at a
time, list more tools than a client may take, list a tool with another schema, and
speak only the protocol of servers before 2026. `held_lookup` answers only once the test
sets `release` (and sets `reached` when a call arrives), so a test can act while a call
is in flight.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, ImageContent, TextContent
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# How long `held_lookup` waits for the test to release it.
HOLD_SECONDS = 30.0
# Twelve kilobytes of "image", so a description can say "12 KB".
PICTURE_BYTES = bytes(12 * 1024)
STARTUP_SECONDS = 10.0


@dataclass(frozen=True)
class McpCall:
    """One `tools/call` the server received."""

    tool: str
    arguments: dict[str, Any]
    meta: dict[str, Any]
    authorization: str | None


@dataclass
class _State:
    calls: list[McpCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    # The Authorization header of the call being answered (for `echo_credentials`).
    authorization: str | None = None


def _build_server(state: _State, page_size: int | None, extra_tools: int,
                  listed_schemas: dict[str, dict[str, Any]], echoing: bool) -> MCPServer:
    async def record(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = dict(ctx.params or {})
        if ctx.method == "tools/call":
            headers = getattr(ctx.request, "headers", None) or {}
            with state.lock:
                state.calls.append(McpCall(
                    tool=str(params.get("name")),
                    arguments=dict(params.get("arguments") or {}),
                    meta=dict(params.get("_meta") or {}),
                    authorization=headers.get("authorization"),
                ))
                state.authorization = headers.get("authorization")
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            return _listing(result, params.get("cursor"), page_size, listed_schemas)
        return result

    server: MCPServer = MCPServer("fake-crm", log_level="WARNING", middleware=[record])

    @server.tool()
    def lookup_customer(name: str) -> str:
        """Find a customer by name and say which tier they are on."""
        return f"{name}: gold tier"

    @server.tool()
    async def held_lookup(name: str) -> str:
        """Find a customer by name, once the test lets the answer go."""
        state.reached.set()
        released = await asyncio.to_thread(state.release.wait, HOLD_SECONDS)
        return f"{name}: gold tier" if released else "held too long"

    @server.tool()
    def failing_tool() -> CallToolResult:
        """Always fails, as a tool error."""
        return CallToolResult(content=[TextContent(text="the CRM is read-only today")],
                              is_error=True)

    @server.tool()
    def picture() -> CallToolResult:
        """A picture of the customer."""
        data = base64.b64encode(PICTURE_BYTES).decode()
        return CallToolResult(content=[ImageContent(data=data, mime_type="image/png")])

    @server.tool()
    def long_text(chars: int) -> str:
        """As many characters as asked for."""
        return "x" * chars

    @server.tool()
    def rejecting_tool() -> str:
        """Answers with a JSON-RPC error instead of a result."""
        raise MCPError(code=INVALID_PARAMS, message="rejecting_tool takes no calls today")

    def echo_credentials(as_error: bool = False) -> str:
        """Repeats the credentials it was sent, as some servers do in their answers."""
        text = f"you sent {state.authorization}"
        if as_error:
            raise MCPError(code=INVALID_PARAMS, message=f"not allowed: {text}")
        return text

    if echoing:
        server.add_tool(echo_credentials)
    for number in range(extra_tools):
        server.add_tool(lambda: "ok", name=f"extra_{number}", description="One of many.")
    return server


def _listing(result: dict[str, Any], cursor: str | None, page_size: int | None,
             listed_schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The listing (as it goes on the wire) as the test asked for it: some schemas
    replaced, a page at a time (MCPServer lists everything at once; pages make the
    client follow cursors)."""
    tools = [{**tool, "inputSchema": listed_schemas.get(tool["name"], tool["inputSchema"])}
             for tool in result["tools"]]
    if not page_size:
        return {**result, "tools": tools}
    start = int(cursor or 0)
    end = start + page_size
    page = {**result, "tools": tools[start:end]}
    if end < len(tools):
        page["nextCursor"] = str(end)
    return page


class _Gate:
    """Answers with `status` while it is set, or 401 without the required Authorization;
    `legacy` refuses the 2026 protocol's `server/discover` as servers before it do."""

    def __init__(self, app: ASGIApp, required_authorization: str | None, legacy: bool) -> None:
        self._app = app
        self._required = required_authorization
        self._legacy = legacy
        self.status: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            if self.status is not None:
                await PlainTextResponse("failing on purpose", self.status)(scope, receive, send)
                return
            if self._required is not None and headers.get("authorization") != self._required:
                await PlainTextResponse("unauthorized", 401)(scope, receive, send)
                return
            if self._legacy and headers.get("mcp-method") == "server/discover":
                await PlainTextResponse("Bad Request: Missing session ID", 400)(
                    scope, receive, send)
                return
        await self._app(scope, receive, send)


class FakeMcpServer:
    """`with FakeMcpServer() as mcp:`; `mcp.url` is its endpoint, `mcp.calls` what it got.

    `require_authorization` makes every request without exactly that Authorization value
    a 401; `page_size` lists tools that many at a time; `extra_tools` adds trivial tools;
    `listed_schemas` lists these tools (by name) with these input schemas instead;
    `legacy` speaks only the session protocol of 2025 (initialize, session ids).
    """

    def __init__(self, *, require_authorization: str | None = None,
                 page_size: int | None = None, extra_tools: int = 0,
                 listed_schemas: dict[str, dict[str, Any]] | None = None,
                 legacy: bool = False, echoing: bool = False) -> None:
        self._state = _State()
        server = _build_server(self._state, page_size, extra_tools, listed_schemas or {},
                               echoing)
        # Tests name it by other host names too (resolved to 127.0.0.1 by the test).
        app = server.streamable_http_app(
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._gate = _Gate(app, require_authorization, legacy)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(self._gate, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def url_for(self, host: str = "127.0.0.1") -> str:
        """The endpoint as `http://<host>:<port>/mcp` (it listens on 127.0.0.1 only)."""
        return f"http://{host}:{self.port}/mcp"

    @property
    def url(self) -> str:
        """The endpoint, `http://127.0.0.1:<port>/mcp`."""
        return self.url_for()

    @property
    def reached(self) -> threading.Event:
        """Set when a `held_lookup` call has arrived."""
        return self._state.reached

    @property
    def release(self) -> threading.Event:
        """Set it to let `held_lookup` calls answer."""
        return self._state.release

    @property
    def calls(self) -> list[McpCall]:
        """A snapshot of the tool calls received, in order."""
        with self._state.lock:
            return list(self._state.calls)

    def answer_status(self, status: int | None) -> None:
        """Answer every request with this HTTP status from now on (None: serve again)."""
        self._gate.status = status

    def __enter__(self) -> FakeMcpServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake MCP server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_SECONDS)
        self._socket.close()
