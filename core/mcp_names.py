"""How agents name the tools of MCP servers: `mcp__<server>__<tool>` for one tool,
`mcp__<server>` for all of a server's tools.

A server's name has no `__` (`SERVER_NAME`), so a tool name splits one way only. The
whole name must also be a tool name every provider takes (letters, digits, `_` and `-`,
at most 64 characters: OpenAI's function-name rule, the strictest of them).
"""

from __future__ import annotations

import re

MCP_PREFIX = "mcp__"
SERVER_NAME = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
MAX_SERVER_NAME = 32
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def mcp_tool_name(server: str, tool: str) -> str:
    """The name agents and models know `tool` of `server` by."""
    return f"{MCP_PREFIX}{server}__{tool}"


def usable_tool_name(server: str, tool: str) -> bool:
    """Whether `tool` of `server` has a name a model can be offered."""
    return bool(_TOOL_NAME.match(mcp_tool_name(server, tool)))


def mcp_tool_parts(name: str) -> tuple[str, str] | None:
    """(server, tool) for `mcp__<server>__<tool>`; None for any other name."""
    if not name.startswith(MCP_PREFIX):
        return None
    server, sep, tool = name[len(MCP_PREFIX):].partition("__")
    return (server, tool) if sep and server and tool else None


def mcp_server_of(name: str) -> str | None:
    """The server of `mcp__<server>` (a whole server's tools); None for other names."""
    if not name.startswith(MCP_PREFIX):
        return None
    server = name[len(MCP_PREFIX):]
    return server if server and "__" not in server else None
