"""The tools of remote MCP servers: one activity per call (activities/mcp_client.py).

A call whose configuration is refused (network rules, an unset header variable, refused
credentials) goes back to the agent as an error result saying what to configure: no
retry would change it. A server that cannot be reached, times out or fails fails the
attempt, and Temporal retries it; every attempt carries the same idempotency key in the
call's `_meta`, so a server that honours it acts once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from core.contract import MCP_TOOL
from core.mcp_client import McpRefused, McpUnavailable, call_tool
from core.tracing import annotate_span
from core.types import ToolCall, ToolResult

MCP_UNAVAILABLE = "McpUnavailable"


class McpTools:
    """Calls MCP servers' tools under the worker's network rules and environment."""

    def __init__(self, allowlist: tuple[str, ...],
                 environ: Mapping[str, str] | None = None) -> None:
        self._allowlist = allowlist
        # Header values `env:NAME` are read from here at each call (the process
        # environment unless a test passes its own).
        self._environ = os.environ if environ is None else environ

    @activity.defn(name=MCP_TOOL)
    async def call(self, call: ToolCall) -> ToolResult:
        """Call the tool on its server and return what the agent reads."""
        target = call.mcp
        if target is None:
            raise ApplicationError(f"{call.name} is not an MCP tool", non_retryable=True)
        annotate_span({"loopllama.tool": call.name, "loopllama.mcp.server": target.server})
        try:
            async with heartbeating():
                return await call_tool(
                    target.url, target.headers, target.tool, call.input,
                    meta={"idempotency_key": call.idempotency_key},
                    allowlist=self._allowlist, environ=self._environ,
                )
        except McpRefused as refused:
            return ToolResult(
                content=f"MCP server {target.server!r} was not called: {refused}.",
                is_error=True,
            )
        except McpUnavailable as unavailable:
            raise ApplicationError(
                f"MCP server {target.server!r}: {unavailable}", type=MCP_UNAVAILABLE
            ) from None
