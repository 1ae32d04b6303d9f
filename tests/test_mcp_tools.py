"""Tools from MCP servers in a crew: listed when the workflow is created, kept in its
definition, offered as `mcp__<server>__<tool>`, gated by approvals, each call an activity
with the run's idempotency key, and every refusal a 400 naming the server or the tool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.settings import Settings
from tests.conftest import free_port
from tests.fakes.mcp_server import FakeMcpServer
from tests.helpers import api_client, create_workflow, get_run, trigger, wait_for_status
from worker import build_worker

OFFLINE = "loopllama-offline"


@pytest.fixture
def loopback(settings: Settings) -> Settings:
    """Settings that let tools (and MCP servers) reach 127.0.0.1."""
    return replace(settings, http_allowlist=("127.0.0.1",))


@pytest.fixture
async def mcp_api(temporal: Client, loopback: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API and a worker, both allowed to reach 127.0.0.1."""
    async with api_client(loopback, temporal) as api, build_worker(temporal, loopback):
        yield api


def agent(tools: list[str], role: str = "researcher") -> dict[str, Any]:
    return {"role": role, "model": OFFLINE, "tools": tools}


async def refused(api: httpx.AsyncClient, **body: Any) -> str:
    response = await api.post("/v1/workflows", json={"name": "mcp", **body})
    assert response.status_code == 400, response.text
    return str(response.json()["error"]["message"])


async def test_the_definition_keeps_the_tools_the_server_listed(
    mcp_api: httpx.AsyncClient, mcp_server: FakeMcpServer,
) -> None:
    workflow = await create_workflow(mcp_api, [agent(["mcp__crm__lookup_customer"])],
                                     mcp_servers=[{"name": "crm", "url": mcp_server.url}])
    [server] = workflow["mcp_servers"]
    assert (server["name"], server["url"], server["headers"]) == ("crm", mcp_server.url, {})
    listed = {tool["name"]: tool for tool in server["tools"]}
    assert listed["lookup_customer"]["input_schema"]["required"] == ["name"]
    read = (await mcp_api.get(f"/v1/workflows/{workflow['id']}")).json()["data"]
    assert read["mcp_servers"] == workflow["mcp_servers"]


async def test_the_offline_model_calls_an_mcp_tool_its_task_names(
    mcp_api: httpx.AsyncClient, mcp_server: FakeMcpServer,
) -> None:
    workflow = await create_workflow(mcp_api, [agent(["mcp__crm"])],
                                     mcp_servers=[{"name": "crm", "url": mcp_server.url}])
    run = await trigger(mcp_api, workflow["id"], "Use lookup_customer for Ada.")
    done = await wait_for_status(mcp_api, run["id"], "completed", "failed", within=30)
    assert done["status"] == "completed", done["error"]
    assert "Tool result: Use lookup_customer for Ada.: gold tier" in done["output"]
    [call] = mcp_server.calls
    assert call.tool == "lookup_customer"
    assert call.meta["idempotency_key"] == f"{run['id']}:0:0:0"


async def test_a_tool_error_goes_back_to_the_agent(
    mcp_api: httpx.AsyncClient, mcp_server: FakeMcpServer,
) -> None:
    workflow = await create_workflow(mcp_api, [agent(["mcp__crm__failing_tool"])],
                                     mcp_servers=[{"name": "crm", "url": mcp_server.url}])
    run = await trigger(mcp_api, workflow["id"], "Try failing_tool.")
    done = await wait_for_status(mcp_api, run["id"], "completed", "failed", within=30)
    assert done["status"] == "completed", done["error"]
    assert "the CRM is read-only today" in done["output"]


async def test_a_whole_server_can_need_approval_and_headers_come_from_the_environment(
    temporal: Client, loopback: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_TOKEN", "Bearer crm-secret-123")
    with FakeMcpServer(require_authorization="Bearer crm-secret-123") as server:
        async with api_client(loopback, temporal) as api, build_worker(temporal, loopback):
            workflow = await create_workflow(
                api, [agent(["mcp__crm"])],
                mcp_servers=[{"name": "crm", "url": server.url,
                              "headers": {"Authorization": "env:CRM_TOKEN"}}],
                human_in_the_loop={"approval_required_tools": ["mcp__crm"]})
            # The definition stores the reference, never the secret.
            assert workflow["mcp_servers"][0]["headers"] == {"Authorization": "env:CRM_TOKEN"}
            run = await trigger(api, workflow["id"], "Use lookup_customer for Ada.")
            waiting = await wait_for_status(api, run["id"], "waiting_input", within=30)
            assert waiting["pending"]["tool"] == "mcp__crm__lookup_customer"
            assert server.calls == []
            answered = await api.post(f"/v1/runs/{run['id']}/respond",
                                      json={"action": "approve"})
            assert answered.status_code == 202, answered.text
            done = await wait_for_status(api, run["id"], "completed", "failed", within=30)
            history = await temporal.get_workflow_handle(run["id"]).fetch_history()
    assert done["status"] == "completed", done["error"]
    [call] = server.calls
    assert call.authorization == "Bearer crm-secret-123"
    assert "crm-secret-123" not in history.to_json()


async def test_refusals_name_the_server_or_the_tool(
    mcp_api: httpx.AsyncClient, api: httpx.AsyncClient, mcp_server: FakeMcpServer,
) -> None:
    crm = {"name": "crm", "url": mcp_server.url}
    message = await refused(mcp_api, crew=[agent(["mcp__crm__nope"])], mcp_servers=[crm])
    assert "'mcp__crm__nope'" in message and "lookup_customer" in message
    message = await refused(mcp_api, crew=[agent(["mcp__billing"])], mcp_servers=[crm])
    assert "'billing'" in message and "declared: crm" in message
    closed = {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    message = await refused(mcp_api, crew=[agent(["mcp__down"])], mcp_servers=[closed])
    assert "mcp_servers.0 (server 'down')" in message
    # Without the allow-list, loopback is refused before anything is sent.
    message = await refused(api, crew=[agent(["mcp__crm"])], mcp_servers=[crm])
    assert "mcp_servers.0 (server 'crm').url" in message and "LOOPLLAMA_HTTP_ALLOWLIST" in message
    message = await refused(mcp_api, crew=[agent(["mcp__crm"])], mcp_servers=[
        {**crm, "headers": {"Authorization": "env:NOT_SET_ANYWHERE"}}])
    assert "NOT_SET_ANYWHERE" in message
    message = await refused(mcp_api, crew=[agent([])], mcp_servers=[
        {**crm, "headers": {"X-Key": "line\nbreak"}}])
    assert "printable ASCII" in message
    message = await refused(mcp_api, crew=[agent([])], mcp_servers=[crm, crm])
    assert "its own name" in message
    message = await refused(mcp_api, crew=[agent([])], mcp_servers=[{**crm, "name": "a__b"}])
    assert "not a server name" in message
    assert mcp_server.calls == []


async def test_a_change_lists_the_servers_again_and_runs_keep_their_snapshot(
    mcp_api: httpx.AsyncClient, mcp_server: FakeMcpServer,
) -> None:
    crm = {"name": "crm", "url": mcp_server.url}
    workflow = await create_workflow(mcp_api, [agent(["mcp__crm__lookup_customer"])],
                                     mcp_servers=[crm])
    changed = await mcp_api.patch(f"/v1/workflows/{workflow['id']}",
                                  json={"crew": [agent(["mcp__crm__nope"])]})
    assert changed.status_code == 400 and "'mcp__crm__nope'" in changed.text
    with FakeMcpServer(extra_tools=1) as other:
        moved = await mcp_api.patch(f"/v1/workflows/{workflow['id']}", json={
            "mcp_servers": [{"name": "crm", "url": other.url}],
            "crew": [agent(["mcp__crm__extra_0"])]})
        assert moved.status_code == 200, moved.text
        names = [tool["name"] for tool in moved.json()["data"]["mcp_servers"][0]["tools"]]
    assert "extra_0" in names
    run = await get_run(mcp_api, (await trigger(mcp_api, workflow["id"], "hello"))["id"])
    assert run["status"] in ("queued", "running", "completed")
