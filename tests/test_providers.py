"""Any model: a crew mixing Claude, `openai/…` and a named OpenAI-compatible provider,
with an MCP tool and an approval, through the real SDKs over HTTP to fakes on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from temporalio.client import Client

from core.settings import ProviderEndpoint, Secret, Settings
from tests.conftest import crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai_server import FakeOpenAI, RecordedRequest
from tests.fakes.smtp_server import FakeSmtp
from tests.helpers import api_client, create_workflow, get_run, trigger, wait_for_status
from worker import build_worker

OPENAI_KEY = "sk-openai-test-0123456789"


def with_providers(settings: Settings, openai_api: FakeOpenAI, local_model: FakeOpenAI,
                   **more: Any) -> Settings:
    """`settings` with OpenAI and a provider named `local`, and loopback allowed (for
    the MCP server)."""
    return replace(settings, openai_api_key=Secret(OPENAI_KEY), openai_base_url=openai_api.url,
                   providers=(ProviderEndpoint("local", local_model.url),),
                   http_allowlist=("127.0.0.1",), **more)


def mixed_crew(tag: str) -> list[dict[str, Any]]:
    """Claude plans, an OpenAI model researches with the CRM's MCP tool, a local model
    writes and sends the email (which needs approval)."""
    planner, researcher, writer = crew("planner", "researcher", "writer", tag=tag)
    researcher.update(model="openai/gpt-4.1", tools=["mcp__crm"])
    writer.update(model="local/llama3.2", tools=["send_email"])
    return [planner, researcher, writer]


def body(request: RecordedRequest) -> dict[str, Any]:
    """A recorded request's JSON body."""
    assert request.body is not None
    return request.body


def for_agent(tag: str, role: str) -> Any:
    """A FakeOpenAI predicate for one agent of one test's crew."""
    marker = f"You are the {role}. [{tag}]"
    return lambda body: any(marker in str(m.get("content")) for m in body.get("messages", [])
                            if m.get("role") == "system")


def script_mixed_crew(tag: str, fake_anthropic: FakeAnthropic, openai_api: FakeOpenAI,
                      local_model: FakeOpenAI, *, tool: str = "lookup_customer") -> None:
    """The replies of `mixed_crew`'s three agents, two rounds for each tool user (the
    researcher calls the CRM's `tool`)."""
    fake_anthropic.reply_text("the plan", tokens_in=40, tokens_out=3,
                              when=for_role(tag, "planner"))
    researcher = for_agent(tag, "researcher")
    openai_api.reply_tool_calls([(f"mcp__crm__{tool}", {"name": "Ada"})],
                                text="Looking Ada up.", prompt_tokens=120, completion_tokens=9,
                                when=researcher)
    openai_api.reply_text("Ada is a gold customer.", prompt_tokens=160, completion_tokens=6,
                          cached_tokens=100, when=researcher)
    writer = for_agent(tag, "writer")
    local_model.reply_tool_calls(
        [("send_email", {"to": "ada@example.com", "subject": "Your plan",
                         "body": "Hello Ada, you are gold."})],
        prompt_tokens=80, completion_tokens=20, when=writer)
    local_model.reply_text("Sent.", prompt_tokens=110, completion_tokens=1, when=writer)


async def test_a_mixed_crew_runs_every_provider_with_tools_and_an_approval(
    temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic,
    openai_api: FakeOpenAI, local_model: FakeOpenAI, mcp_server: FakeMcpServer, smtp: FakeSmtp,
) -> None:
    own = with_providers(settings, openai_api, local_model, smtp_url=Secret(smtp.url))
    tag = unique_tag()
    script_mixed_crew(tag, fake_anthropic, openai_api, local_model)
    async with api_client(own, temporal) as api, build_worker(temporal, own):
        workflow = await create_workflow(
            api, mixed_crew(tag), mcp_servers=[{"name": "crm", "url": mcp_server.url}],
            human_in_the_loop={"approval_required_tools": ["send_email"]})
        [server] = workflow["mcp_servers"]
        assert "lookup_customer" in [tool["name"] for tool in server["tools"]]
        run = await trigger(api, workflow["id"], "Tell Ada about her plan.")
        waiting = await wait_for_status(api, run["id"], "waiting_input", within=60)
        assert waiting["pending"]["tool"] == "send_email"
        assert waiting["pending"]["tool_input"]["to"] == "ada@example.com"
        answered = await api.post(f"/v1/runs/{run['id']}/respond",
                                  json={"action": "approve",
                                        "pause_id": waiting["pending"]["id"]})
        assert answered.status_code == 202, answered.text
        done = await wait_for_status(api, run["id"], "completed", "failed", within=60)
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "Sent."
    planner, researcher, writer = done["steps"]
    assert (researcher["model"], researcher["output"]) == ("openai/gpt-4.1",
                                                           "Ada is a gold customer.")
    assert (researcher["tokens_in"], researcher["tokens_out"]) == (280, 15)
    assert researcher["tokens_in_cached"] == 100
    assert (writer["tokens_in"], writer["tokens_out"]) == (190, 21)
    assert done["tokens_in_cached"] == 100

    # OpenAI got its own model name, the key, max_completion_tokens, the MCP tool as a
    # function, and then the tool's result as a `tool` message.
    first, second = openai_api.requests
    assert body(first)["model"] == "gpt-4.1" and first.api_key == OPENAI_KEY
    assert "max_completion_tokens" in body(first) and "max_tokens" not in body(first)
    offered = [tool["function"]["name"] for tool in body(first)["tools"]]
    assert "mcp__crm__lookup_customer" in offered and "mcp__crm__picture" in offered
    [tool_message] = [m for m in second.messages if m["role"] == "tool"]
    assert tool_message["content"] == "Ada: gold tier"
    # The local model: its own name, max_tokens, no key of anyone else's.
    local_first, _ = local_model.requests
    assert body(local_first)["model"] == "llama3.2" and "max_tokens" in body(local_first)
    assert local_first.api_key not in (OPENAI_KEY, "sk-ant-test")
    # The MCP call carried the run's idempotency key.
    [call] = mcp_server.calls
    assert (call.tool, call.arguments) == ("lookup_customer", {"name": "Ada"})
    assert call.meta["idempotency_key"] == f"{run['id']}:1:0:0"
    [mail] = smtp.messages()
    assert "ada@example.com" in mail.recipients


async def test_a_model_whose_provider_is_missing_is_a_400_naming_those_there_are(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/workflows", json={
        "name": "x", "crew": [{"role": "writer", "model": "local/llama3.2"}]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "crew.0.model" in message and "'local'" in message
    assert "claude-* (anthropic)" in message and "LOOPLLAMA_PROVIDERS" in message
    bad = await api.post("/v1/workflows", json={
        "name": "x", "crew": [{"role": "writer", "model": "gpt-4"}]})
    assert bad.status_code == 400 and "openai/<model>" in bad.json()["error"]["message"]
    created = await api.post("/v1/workflows", json={
        "name": "x", "crew": [{"role": "writer", "model": "claude-sonnet-4-6"}]})
    assert created.status_code == 201
    patched = await api.patch(f"/v1/workflows/{created.json()['data']['id']}", json={
        "crew": [{"role": "writer", "model": "openai/gpt-4.1"}]})
    assert patched.status_code == 400 and "OPENAI_API_KEY" in patched.json()["error"]["message"]


async def test_a_worker_without_the_provider_fails_the_step_at_once_saying_so(
    temporal: Client, settings: Settings, openai_api: FakeOpenAI, local_model: FakeOpenAI,
) -> None:
    own = with_providers(settings, openai_api, local_model)
    async with api_client(own, temporal) as api, build_worker(temporal, settings):
        workflow = await create_workflow(api, [{"role": "writer", "model": "local/llama3.2"}])
        run = await trigger(api, workflow["id"], "Hello")
        done = await wait_for_status(api, run["id"], "completed", "failed", within=30)
    assert done["status"] == "failed"
    assert "needs the provider 'local'" in done["error"] and "LOOPLLAMA_PROVIDERS" in done["error"]
    assert local_model.requests == []


async def test_provider_errors_are_retried_or_fail_at_once_with_its_message(
    temporal: Client, settings: Settings, openai_api: FakeOpenAI, local_model: FakeOpenAI,
) -> None:
    own = with_providers(settings, openai_api, local_model)
    tag = unique_tag()
    writer = for_agent(tag, "writer")
    openai_api.reply_error(429, "slow down", headers={"retry-after": "0"}, when=writer)
    openai_api.reply_error(500, "oops", when=writer)
    openai_api.reply_text("fine after all", when=writer)
    local_model.reply_error(400, "model 'nope' not found, try pulling it first",
                            when=for_agent(tag, "writer"))
    async with api_client(own, temporal) as api, build_worker(temporal, own):
        retried = await create_workflow(api, crew("writer", tag=tag, model="openai/gpt-4.1"))
        refused = await create_workflow(api, crew("writer", tag=tag, model="local/nope"))
        first = await trigger(api, retried["id"], "Hello")
        second = await trigger(api, refused["id"], "Hello")
        ok = await wait_for_status(api, first["id"], "completed", "failed", within=60)
        failed = await wait_for_status(api, second["id"], "completed", "failed", within=30)
        steps = (await get_run(api, second["id"]))["steps"]
    assert ok["status"] == "completed" and ok["output"] == "fine after all"
    assert len(openai_api.requests) == 3
    assert failed["status"] == "failed" and len(local_model.requests) == 1
    assert "400" in failed["error"] and "try pulling it first" in failed["error"]
    assert steps[0]["error"] and "local" in steps[0]["error"]
