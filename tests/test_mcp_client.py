"""The MCP client (activities/mcp_client.py) against a real MCP server over Streamable
HTTP (tests/fakes/mcp_server.py), through the `mcp` package's own client, and the
activity that makes each call (activities/mcp_tools.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.mcp_tools import MCP_UNAVAILABLE, McpTools
from core.mcp_client import (
    MAX_RESULT_CHARS,
    MAX_TOOLS,
    McpRefused,
    McpUnavailable,
    call_tool,
    list_tools,
    resolve_headers,
)
from core.types import McpTarget, ToolCall, ToolResult
from tests.conftest import free_port
from tests.fakes.mcp_server import FakeMcpServer

pytestmark = pytest.mark.timeout(60)

LOOPBACK = ("127.0.0.1",)
KEY = "run-1:0:0:0"


async def call(server: FakeMcpServer, tool: str, arguments: dict[str, Any] | None = None,
               **options: Any) -> ToolResult:
    """`tool` called on `server` as a worker would, the loopback address allow-listed."""
    options = {"headers": {}, "allowlist": LOOPBACK, "environ": {}, "timeout": 10.0, **options}
    return await call_tool(server.url, options.pop("headers"), tool, arguments or {},
                           meta={"idempotency_key": KEY}, **options)


async def resolve_to_loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def resolve_to_public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


async def test_lists_names_descriptions_and_schemas(mcp_server: FakeMcpServer) -> None:
    tools = await list_tools(mcp_server.url, {}, allowlist=LOOPBACK, environ={})
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == {"lookup_customer", "held_lookup", "failing_tool", "picture",
                            "long_text", "rejecting_tool"}
    lookup = by_name["lookup_customer"]
    assert lookup.description == "Find a customer by name and say which tier they are on."
    assert lookup.input_schema["type"] == "object"
    assert lookup.input_schema["properties"]["name"]["type"] == "string"
    assert lookup.input_schema["required"] == ["name"]


async def test_listing_follows_every_page() -> None:
    with FakeMcpServer(page_size=2, extra_tools=3) as server:
        tools = await list_tools(server.url, {}, allowlist=LOOPBACK, environ={})
    assert len(tools) == 9
    assert {f"extra_{n}" for n in range(3)} <= {tool.name for tool in tools}


async def test_listing_more_tools_than_allowed_is_refused() -> None:
    with FakeMcpServer(extra_tools=MAX_TOOLS) as server:
        with pytest.raises(McpUnavailable, match=f"more than {MAX_TOOLS} tools"):
            await list_tools(server.url, {}, allowlist=LOOPBACK, environ={})


async def test_listing_a_tool_with_an_unusable_schema_names_it() -> None:
    outside = {"type": "object", "properties": {"x": {"$ref": "https://example.com/x"}}}
    with FakeMcpServer(listed_schemas={"picture": outside}) as server:
        with pytest.raises(McpUnavailable, match="'picture'.*points outside the schema"):
            await list_tools(server.url, {}, allowlist=LOOPBACK, environ={})


@pytest.mark.parametrize("legacy", [False, True], ids=["2026", "2025"])
async def test_a_call_returns_text_and_sends_the_idempotency_key(legacy: bool) -> None:
    with FakeMcpServer(legacy=legacy) as server:
        assert len(await list_tools(server.url, {}, allowlist=LOOPBACK, environ={})) == 6
        result = await call(server, "lookup_customer", {"name": "Ada"})
        assert result == ToolResult(content="Ada: gold tier", is_error=False)
        [received] = server.calls
    assert received.tool == "lookup_customer"
    assert received.arguments == {"name": "Ada"}
    assert received.meta["idempotency_key"] == KEY


async def test_a_tool_error_goes_back_as_an_error_result(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "failing_tool")
    assert result == ToolResult(content="the CRM is read-only today", is_error=True)


async def test_a_json_rpc_error_goes_back_as_an_error_result(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "rejecting_tool")
    assert result == ToolResult(content="rejecting_tool takes no calls today", is_error=True)


async def test_an_unknown_tool_is_an_error_result(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "no_such_tool")
    assert result.is_error
    assert "no_such_tool" in result.content


async def test_an_image_is_described(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "picture")
    assert result == ToolResult(content="[image: image/png, 12 KB]", is_error=False)


async def test_a_long_result_is_cut_with_a_note(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "long_text", {"chars": MAX_RESULT_CHARS + 10})
    assert result.content.startswith("x" * MAX_RESULT_CHARS + "\n[cut: the result has ")
    assert not result.is_error


async def test_an_answer_past_the_byte_limit_is_not_read(mcp_server: FakeMcpServer) -> None:
    result = await call(mcp_server, "long_text", {"chars": 5 * 1024 * 1024})
    assert result.is_error
    assert "larger than 4 MiB" in result.content


async def test_an_env_header_is_read_at_call_time_and_sent() -> None:
    with FakeMcpServer(require_authorization="Bearer s3cret") as server:
        result = await call(server, "lookup_customer", {"name": "Ada"},
                            headers={"Authorization": "env:CRM_TOKEN"},
                            environ={"CRM_TOKEN": "Bearer s3cret"})
        assert result.content == "Ada: gold tier"
        assert [received.authorization for received in server.calls] == ["Bearer s3cret"]


async def test_a_missing_env_variable_is_refused_by_name(mcp_server: FakeMcpServer) -> None:
    with pytest.raises(McpRefused, match="CRM_TOKEN, which is not set"):
        await call(mcp_server, "lookup_customer", {"name": "Ada"},
                   headers={"Authorization": "env:CRM_TOKEN"}, environ={})
    assert mcp_server.calls == []


@pytest.mark.parametrize("as_error", [False, True], ids=["result", "error"])
async def test_no_answer_carries_on_the_credentials_a_header_read(as_error: bool) -> None:
    secret = "Bearer crm-7f3a9b2c4d5e6f70"
    with FakeMcpServer(require_authorization=secret, echoing=True) as server:
        result = await call(server, "echo_credentials", {"as_error": as_error},
                            headers={"Authorization": "env:CRM_TOKEN", "X-Tenant": "acme"},
                            environ={"CRM_TOKEN": secret})
    assert server.calls[0].authorization == secret
    assert result.is_error is as_error
    assert "crm-7f3a9b2c4d5e6f70" not in result.content
    assert result.content.endswith("you sent [redacted]")


def test_literal_headers_are_sent_as_they_are() -> None:
    headers = {"X-Tenant": "acme", "Authorization": "env:TOKEN"}
    assert resolve_headers(headers, {"TOKEN": "Bearer t"}) == {
        "X-Tenant": "acme", "Authorization": "Bearer t",
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["2026", "2025"])
async def test_refused_credentials_are_refused_without_their_value(legacy: bool) -> None:
    with FakeMcpServer(require_authorization="Bearer s3cret", legacy=legacy) as server:
        with pytest.raises(McpRefused, match="HTTP 401") as refused:
            await list_tools(server.url, {"Authorization": "env:CRM_TOKEN"},
                             allowlist=LOOPBACK, environ={"CRM_TOKEN": "Bearer wrong"})
    assert "wrong" not in str(refused.value)


async def test_an_unreachable_server_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(McpUnavailable, match="could not be reached"):
        await list_tools(url, {}, allowlist=LOOPBACK, environ={})


async def test_a_silent_server_times_out(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/mcp"
    with pytest.raises(McpUnavailable, match="did not answer within 0.5 s"):
        await call_tool(url, {}, "lookup_customer", {}, meta={}, allowlist=LOOPBACK,
                        environ={}, timeout=0.5)


@pytest.mark.parametrize("legacy", [False, True], ids=["2026", "2025"])
async def test_a_server_error_status_is_unavailable(legacy: bool) -> None:
    with FakeMcpServer(legacy=legacy) as server:
        server.answer_status(503)
        with pytest.raises(McpUnavailable, match="HTTP 503"):
            await call(server, "lookup_customer", {"name": "Ada"})


async def test_loopback_is_refused_unless_allow_listed(mcp_server: FakeMcpServer) -> None:
    with pytest.raises(McpRefused, match="non-public address 127.0.0.1.*LOOPLLAMA_HTTP_ALLOWLIST"):
        await list_tools(mcp_server.url, {}, allowlist=(), environ={})
    with pytest.raises(McpRefused, match="non-public address"):
        await call(mcp_server, "lookup_customer", {"name": "Ada"}, allowlist=())
    assert mcp_server.calls == []
    assert await list_tools(mcp_server.url, {}, allowlist=LOOPBACK, environ={})


async def test_plain_http_is_refused_off_the_allow_list() -> None:
    with pytest.raises(McpRefused, match="plain http"):
        await list_tools("http://mcp.example.com/mcp", {}, allowlist=(), environ={},
                         resolver=resolve_to_public)


async def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(McpRefused, match="user name or password"):
        await list_tools("https://user:pw@mcp.example.com/mcp", {}, allowlist=(), environ={},
                         resolver=resolve_to_public)


async def test_connects_only_to_the_checked_address(mcp_server: FakeMcpServer) -> None:
    # The name does not resolve anywhere: the call can only reach the server at the
    # address the check returned.
    url = mcp_server.url_for("mcp.invalid")
    result = await call_tool(url, {}, "lookup_customer", {"name": "Ada"}, meta={},
                             allowlist=("mcp.invalid",), environ={}, timeout=10.0,
                             resolver=resolve_to_loopback)
    assert result.content == "Ada: gold tier"


def tool_call(url: str, tool: str, arguments: dict[str, Any],
              headers: dict[str, str] | None = None) -> ToolCall:
    """A call of `tool` on the server `crm` at `url`, as a run schedules it."""
    return ToolCall(
        run_id="run-1", tool_use_id="toolu_1", name=f"mcp__crm__{tool}", input=arguments,
        mcp=McpTarget(server="crm", url=url, headers=headers or {}, tool=tool),
        step=0, round=0, position=0,
    )


async def test_the_activity_calls_with_the_runs_idempotency_key() -> None:
    with FakeMcpServer(require_authorization="Bearer s3cret") as server:
        tools = McpTools(LOOPBACK, environ={"CRM_TOKEN": "Bearer s3cret"})
        call_ = tool_call(server.url, "lookup_customer", {"name": "Ada"},
                          headers={"Authorization": "env:CRM_TOKEN"})
        result = await ActivityEnvironment().run(tools.call, call_)
        [received] = server.calls
    assert result == ToolResult(content="Ada: gold tier", is_error=False)
    assert received.meta["idempotency_key"] == call_.idempotency_key == KEY
    assert received.authorization == "Bearer s3cret"


async def test_the_activity_answers_a_refusal_with_what_to_configure(
        mcp_server: FakeMcpServer) -> None:
    tools = McpTools(LOOPBACK, environ={})
    call_ = tool_call(mcp_server.url, "lookup_customer", {"name": "Ada"},
                      headers={"Authorization": "env:CRM_TOKEN"})
    result = await ActivityEnvironment().run(tools.call, call_)
    assert result.is_error
    assert result.content.startswith("MCP server 'crm' was not called: ")
    assert "CRM_TOKEN" in result.content


async def test_the_activity_fails_the_attempt_when_the_server_is_unavailable() -> None:
    tools = McpTools(LOOPBACK, environ={})
    call_ = tool_call(f"http://127.0.0.1:{free_port()}/mcp", "lookup_customer", {})
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(tools.call, call_)
    assert failed.value.type == MCP_UNAVAILABLE
    assert not failed.value.non_retryable
    assert failed.value.message.startswith("MCP server 'crm': http://127.0.0.1:")
