"""Record the histories that tests/test_replay.py replays against the current code.

Run it (`python -m tests.record_histories`) when a scenario is added; never just to make
a failing replay pass: a replay failure means running histories would break, and the
change needs `workflow.patched` instead.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from api.app import create_app
from core.devserver import DevServer
from core.settings import Secret, Settings
from core.temporal import connect, ensure_namespace_ready
from tests import graph_scenarios
from tests.conftest import API_KEY, WEBHOOK_KEY, crew, eventually, for_role, free_port, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_worker

HISTORIES = Path(__file__).parent / "histories"
# Large payloads of the recorded runs: histories hold references to these files.
BLOBS = HISTORIES / "blobs"


@dataclass
class Scenario:
    """One recorded history: its file name and how to produce the run."""

    name: str
    produce: Callable[[httpx.AsyncClient, FakeAnthropic], Awaitable[str]] | None = None
    # For scenarios that act on Temporal directly, not only through the API.
    produce_with_temporal: (
        Callable[[httpx.AsyncClient, Client], Awaitable[str]] | None
    ) = None


async def completed_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    fake.reply_text("the plan", tokens_in=180, tokens_out=120, when=for_role(tag, "planner"))
    fake.reply_error(429, when=for_role(tag, "writer"))
    fake.reply_text("the brief", tokens_in=232, tokens_out=166, when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    run = await trigger(api, workflow["id"], "Draft a brief.")
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def failed_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    fake.reply_text("the plan", when=for_role(tag, "planner"))
    fake.reply_error(400, message="bad request", when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    run = await trigger(api, workflow["id"], "Draft a brief.")
    await wait_for_status(api, run["id"], "failed", within=60)
    return str(run["id"])


async def offline_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    workflow = await create_workflow(
        api, crew("planner", "writer", "editor", model="loopllama-offline")
    )
    run = await trigger(api, workflow["id"], "Plan a launch.")
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def any_model_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    """Claude, then an OpenAI model (the recorder's FakeOpenAI echoes), then the offline
    model calling an MCP tool that needs approval: every model call is `model_call`."""
    tag = unique_tag()
    fake.reply_text("the plan", when=for_role(tag, "planner"))
    planner, researcher, writer = crew("planner", "researcher", "writer", tag=tag)
    researcher["model"] = "openai/gpt-4.1"
    writer.update(model="loopllama-offline", tools=["mcp__crm"])
    with FakeMcpServer() as mcp:
        workflow = await create_workflow(
            api, [planner, researcher, writer], mcp_servers=[{"name": "crm", "url": mcp.url}],
            human_in_the_loop={"approval_required_tools": ["mcp__crm__lookup_customer"]})
        run = await trigger(api, workflow["id"], "Use lookup_customer for Ada.")
        await respond(api, run["id"], action="approve")
        await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def forked_replay_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    """A fork, in replay mode, of a two-agent run whose mailer's email was approved: the
    planner is reused, the mailer runs again with its email answered from the record."""
    planner, mailer = crew("planner", "mailer", model="loopllama-offline")
    mailer["tools"] = ["send_email"]
    workflow = await create_workflow(
        api, [planner, mailer], human_in_the_loop={"approval_required_tools": ["send_email"]})
    source = await trigger(api, workflow["id"], "Email bob@example.com about the launch.")
    await respond(api, source["id"], action="approve")
    await wait_for_status(api, source["id"], "completed", within=60)
    response = await api.post(f"/v1/runs/{source['id']}/fork", json={
        "from": "mailer", "tools": "replay",
        "agents": {"mailer": {"instructions": "You are the mailer, briefer."}}})
    assert response.status_code == 202, response.text
    fork_id = str(response.json()["data"]["id"])
    await wait_for_status(api, fork_id, "completed", within=60)
    return fork_id


async def tool_checked_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    """An approval-gated http_request to a host off the allow-list: refused by the
    worker's check, so nobody is asked."""
    workflow = await create_workflow(
        api, crew("fetcher", model="loopllama-offline", tools=["http_request"]),
        human_in_the_loop={"approval_required_tools": ["http_request"]})
    run = await trigger(api, workflow["id"], "Fetch https://api.example.com/status for me.")
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def respond(api: httpx.AsyncClient, run_id: str, **body: str) -> None:
    await wait_for_status(api, run_id, "waiting_input")
    response = await api.post(f"/v1/runs/{run_id}/respond", json=body)
    assert response.status_code == 202, response.text


async def paused_run(api: httpx.AsyncClient, decision: dict[str, str]) -> str:
    workflow = await create_workflow(
        api, crew("mailer", model="loopllama-offline", tools=["send_email"]),
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    run = await trigger(api, workflow["id"], "Ask me about tone, then email bob@example.com.")
    await respond(api, run["id"], action="input", input="Friendly.")
    await respond(api, run["id"], **decision)
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def approved_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    return await paused_run(api, {"action": "approve"})


async def rejected_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    return await paused_run(api, {"action": "reject", "reason": "Not to Bob."})


async def cancelled_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    fake.reply_text("too late", delay=30, when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run = await trigger(api, workflow["id"], "Write slowly.")
    await wait_for_status(api, run["id"], "running")
    response = await api.post(f"/v1/runs/{run['id']}/cancel")
    assert response.json()["data"]["status"] == "cancelled", response.text
    return str(run["id"])


async def pause_id_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    workflow = await create_workflow(
        api, crew("mailer", model="loopllama-offline", tools=["send_email"]),
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    run = await trigger(api, workflow["id"], "Ask me about tone, then email bob@example.com.")
    for body in ({"action": "input", "input": "Friendly."}, {"action": "approve"}):
        paused = await wait_for_status(api, run["id"], "waiting_input")
        response = await api.post(f"/v1/runs/{run['id']}/respond",
                                  json={**body, "pause_id": paused["pending"]["id"]})
        assert response.status_code == 202, response.text
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def big_outputs_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    for role in ("planner", "writer", "editor"):
        fake.reply_text(f"{role}: " + "text " * 5_000, when=for_role(tag, role))
    workflow = await create_workflow(api, crew("planner", "writer", "editor", tag=tag))
    run = await trigger(api, workflow["id"], "Write at length.")
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def definition_lifecycle(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    workflow = await create_workflow(
        api, crew("planner", "writer", model="loopllama-offline"),
        tools=[{"name": "crm_update", "description": "Update a contact.",
                "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                "url": "https://crm.example.com/update"}],
        human_in_the_loop={"allow_input_requests": True, "input_timeout_seconds": 600},
    )
    path = f"/v1/workflows/{workflow['id']}"
    for method, suffix, body in (
        ("PATCH", "", {"name": "renamed", "crew": crew("writer", model="loopllama-offline")}),
        ("POST", "/pause", None), ("POST", "/resume", None), ("DELETE", "", None),
    ):
        response = await api.request(method, path + suffix, json=body)
        assert response.status_code < 300, response.text
    return str(workflow["id"])


async def definition_cancel_ignored(api: httpx.AsyncClient, temporal: Client) -> str:
    workflow = await create_workflow(api, crew("writer", model="loopllama-offline"))
    path = f"/v1/workflows/{workflow['id']}"
    handle = temporal.get_workflow_handle(workflow["id"])
    # What the Temporal UI's "Request Cancellation" sends.
    await handle.cancel()

    async def noted() -> bool:
        metadata = await handle.query("__temporal_workflow_metadata",
                                      result_type=WorkflowMetadata)
        return "cancel request was ignored" in metadata.current_details

    await eventually(noted)
    for method, suffix, body in (
        ("PATCH", "", {"name": "still here"}), ("POST", "/pause", None),
        ("POST", "/resume", None), ("DELETE", "", None),
    ):
        response = await api.request(method, path + suffix, json=body)
        assert response.status_code < 300, response.text
    return str(workflow["id"])


async def webhooked_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    with WebhookReceiver() as receiver:
        workflow = await create_workflow(
            api, crew("planner", "writer", model="loopllama-offline"),
            webhooks=[{"url": receiver.url, "events": ["run.started", "step.completed",
                                                       "run.completed"]}],
        )
        run = await trigger(api, workflow["id"], "Plan a launch.")
        await wait_for_status(api, run["id"], "completed", within=60)

        async def delivered() -> bool:
            # run.started, two step.completed, run.completed
            return len(receiver.deliveries()) >= 4

        await eventually(delivered, within=30)
    return str(run["id"])


SCENARIOS = [
    Scenario("run_completed", completed_run),
    Scenario("run_failed", failed_run),
    Scenario("run_offline_three_agents", offline_run),
    Scenario("run_question_then_approval", approved_run),
    Scenario("run_question_then_rejection", rejected_run),
    Scenario("run_cancelled", cancelled_run),
    # run_retried.json is a retry by Temporal reset, recorded by the release before crew
    # graphs; retries are new executions now (graph_retried), so it is kept, not re-recorded.
    Scenario("run_pause_ids", pause_id_run),
    # Payloads over the offload threshold, kept in histories/blobs.
    Scenario("run_big_outputs", big_outputs_run),
    Scenario("definition_lifecycle", definition_lifecycle),
    # Each event a webhook wants is a WebhookDelivery child the run starts.
    Scenario("run_with_webhooks", webhooked_run),
    # A cancel request from the Temporal UI or CLI, ignored; then changed and deleted.
    Scenario("definition_cancel_ignored", produce_with_temporal=definition_cancel_ignored),
    # Crew graphs (tests/graph_scenarios.py); a retried run's history is its new execution.
    Scenario("graph_fan_out", graph_scenarios.fan_out_run),
    Scenario("graph_two_pauses", graph_scenarios.two_pauses_run),
    Scenario("graph_failed_branch", graph_scenarios.failed_branch_run),
    Scenario("graph_retried", graph_scenarios.retried_fan_out_run),
    # Providers and MCP tools: one model-call activity for every provider.
    Scenario("run_any_model", any_model_run),
    # A fork: reused steps carried in its input, tools answered from the record.
    Scenario("run_forked_replay", forked_replay_run),
    # An HTTP call the worker's check (tool_check) refuses before its approval is asked.
    Scenario("run_tool_checked_approval", tool_checked_run),
]


async def record(names: set[str] | None = None) -> None:
    """Run each scenario on a fresh dev server and write its history as JSON."""
    HISTORIES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as fake, FakeSmtp() as smtp, \
            FakeOpenAI() as openai_api:
        server = DevServer(db_file=Path(tmp) / "t.db", log_file=Path(tmp) / "t.log",
                           port=free_port(), ui_port=None)
        await ensure_namespace_ready(await server.start())
        try:
            client = await connect(server.address, "default", blob_dir=BLOBS)
            settings = Settings(
                api_keys=(Secret(API_KEY),), temporal_address=server.address,
                temporal_task_queue="record", anthropic_api_key=Secret("sk-test"),
                anthropic_base_url=fake.url, smtp_url=Secret(smtp.url), blob_dir_override=BLOBS,
                webhook_key=Secret(WEBHOOK_KEY), http_allowlist=("127.0.0.1",),
                openai_api_key=Secret("sk-openai-test"), openai_base_url=openai_api.url,
            )
            app = create_app(settings, client)
            async with build_worker(client, settings), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as api:
                for scenario in SCENARIOS:
                    if names and scenario.name not in names:
                        continue
                    if scenario.produce_with_temporal is not None:
                        run_id = await scenario.produce_with_temporal(api, client)
                    else:
                        assert scenario.produce is not None
                        run_id = await scenario.produce(api, fake)
                    history = await client.get_workflow_handle(run_id).fetch_history()
                    path = HISTORIES / f"{scenario.name}.json"
                    path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                    print(f"wrote {path}")
        finally:
            await server.stop()


if __name__ == "__main__":
    import sys

    asyncio.run(record(set(sys.argv[1:]) or None))
