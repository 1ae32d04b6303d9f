"""Hardening: idempotency keys from a call's place in the run, lenient payloads, lists
that need no describe per row, and the checks the runs list makes first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.settings import Settings
from tests.conftest import crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.tool_server import ToolServer
from tests.helpers import api_client, create_workflow, trigger, wait_for_status
from worker import build_worker


@pytest.fixture
async def api(temporal: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with 127.0.0.1 allow-listed: custom tools on the tool server are declared
    under the webhooks' create-time address policy; each worker keeps its own list."""
    async with api_client(replace(settings, http_allowlist=("127.0.0.1",)), temporal) as client:
        yield client


async def test_a_repeated_tool_use_id_still_gets_a_new_idempotency_key(
    api: httpx.AsyncClient, temporal: Client, settings: Settings,
    fake_anthropic: FakeAnthropic, tool_server: ToolServer,
) -> None:
    # A model (or gateway) that reuses its tool_use ids: two rounds, and two calls in one
    # round, all named "toolu_dup". Each call must act once, under its own key.
    tag = unique_tag()
    agent = for_role(tag, "crm")
    update: dict[str, Any] = {"contact": "bob"}
    fake_anthropic.reply_tool_use("crm_update", update, tool_use_id="toolu_dup", when=agent)
    fake_anthropic.enqueue(fake_anthropic_two_calls(update, agent))
    fake_anthropic.reply_text("Updated thrice.", when=agent)
    workflow = await create_workflow(
        api, crew("crm", tag=tag, tools=["crm_update"]),
        tools=[{"name": "crm_update", "description": "Update a contact.",
                "input_schema": {"type": "object"}, "url": tool_server.url("/crm")}],
    )
    async with build_worker(temporal, replace(settings, http_allowlist=("127.0.0.1",))):
        run_id = (await trigger(api, workflow["id"], "Update Bob."))["id"]
        done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    keys = [request.headers["idempotency-key"] for request in tool_server.requests()]
    assert keys == [f"{run_id}:0:0:0", f"{run_id}:0:1:0", f"{run_id}:0:1:1"]


def fake_anthropic_two_calls(update: dict[str, Any], when: Any) -> Any:
    from tests.fakes.anthropic_server import Reply

    return Reply(
        content=[{"type": "tool_use", "id": "toolu_dup", "name": "crm_update", "input": update},
                 {"type": "tool_use", "id": "toolu_dup", "name": "crm_update", "input": update}],
        stop_reason="tool_use", when=when,
    )


# ------------------------------------------------------------- replay-safe payloads


def test_payloads_decode_whatever_an_earlier_or_later_release_wrote() -> None:
    from temporalio.contrib.pydantic import pydantic_data_converter

    from core.types import Answer, DefinitionChange, RunInput, ToolCall

    converter = pydantic_data_converter.payload_converter
    # A model name today's rules refuse, a tool round limit past today's maximum, and
    # fields no release knows: a stored payload still decodes, exactly as written.
    run_input = {
        "run_id": "ckrun000000000000000000000", "workflow_id": "ckva000000000000000000000",
        "input": "x", "created_at": "2026-01-01T00:00:00.000Z", "from_the_future": 1,
        "crew": [{"role": "a", "model": "gpt-9", "max_tool_rounds": 1000, "temperature": 1}],
        "tools": [{"name": "send_email", "url": "ftp://x", "input_schema": {"$ref": "#/no"}}],
    }
    (payload,) = converter.to_payloads([run_input])
    (decoded,) = converter.from_payloads([payload], [RunInput])
    assert decoded.crew[0].model == "gpt-9" and decoded.crew[0].max_tool_rounds == 1000
    assert decoded.tools[0].url == "ftp://x"
    for type_, value in (
        (Answer, {"action": "shrug", "pause_id": "", "mood": "late"}),
        (DefinitionChange, {"name": "", "crew": [{"role": "", "model": "?"}], "x": 1}),
        (ToolCall, {"run_id": "r", "tool_use_id": "t", "name": "n", "input": {}, "y": 2}),
    ):
        (payload,) = converter.to_payloads([value])
        converter.from_payloads([payload], [type_])


async def test_a_definition_stored_under_older_rules_still_reads_and_runs(
    api: httpx.AsyncClient, temporal: Client, settings: Settings, worker: Any
) -> None:
    from datetime import UTC, datetime

    from api.services.definitions import Definitions
    from core.ids import WORKFLOW_PREFIX, new_id
    from core.types import Workflow
    from workflows.definition import MEMO_KEY, CrewDefinitionWorkflow, DefinitionInput

    # As an older release might have stored it: an empty description with a role that
    # today's rules would refuse (65 characters) and an extra field.
    now = datetime.now(UTC)
    legacy = Workflow.model_validate({
        "id": new_id(WORKFLOW_PREFIX), "name": "legacy", "created_at": now,
        "updated_at": now, "retired_field": True,
        "crew": [{"role": "r" * 65, "model": "loopllama-offline"}],
    })
    await temporal.start_workflow(
        CrewDefinitionWorkflow.run, DefinitionInput(workflow=legacy), id=legacy.id,
        task_queue=settings.temporal_task_queue,
        memo={MEMO_KEY: legacy.model_dump(mode="json")},
    )
    got = await api.get(f"/v1/workflows/{legacy.id}")
    assert got.status_code == 200 and got.json()["data"]["crew"][0]["role"] == "r" * 65
    listed = await Definitions(temporal, settings.temporal_task_queue).list()
    assert legacy.id in {d.id for d in listed}
    run_id = (await trigger(api, legacy.id, "Go."))["id"]
    assert (await wait_for_status(api, run_id, "completed", "failed"))["status"] == "completed"
    # Changing it asks for today's rules, and says which one the stored crew breaks.
    patched = await api.patch(f"/v1/workflows/{legacy.id}", json={"name": "renamed"})
    assert patched.status_code == 400 and "role" in patched.json()["error"]["message"]
    fixed = await api.patch(f"/v1/workflows/{legacy.id}", json={
        "crew": [{"role": "r", "model": "loopllama-offline"}]})
    assert fixed.status_code == 200, fixed.text


async def test_the_runs_list_refuses_a_foreign_id_before_querying(
    api: httpx.AsyncClient,
) -> None:
    for bad in ("ckva' OR WorkflowType = 'CrewDefinition", "x" * 300):
        response = await api.get(f"/v1/workflows/{bad}/runs")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found_error"


# ------------------------------------------------------------------ model errors


@pytest.mark.parametrize(
    ("status", "retried"),
    [(400, False), (401, False), (403, False), (404, False), (413, False), (422, False),
     (408, True), (409, True), (429, True), (500, True), (502, True), (503, True),
     (529, True), (599, True)],
)
async def test_model_errors_are_classified_by_status(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic, status: int,
    retried: bool,
) -> None:
    # One failing answer, then a good one: a passing status is retried and the run
    # completes; any other fails the step at once, and the model is not called again.
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_error(status, message=f"status {status}", when=writer,
                               headers={"retry-after": "0"})
    fake_anthropic.reply_text("written", when=writer)
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Write."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    if retried:
        assert done["status"] == "completed", done["error"]
        assert fake_anthropic.count(writer) == 2
    else:
        assert done["status"] == "failed"
        assert f"rejected the request ({status}" in done["error"]
        assert fake_anthropic.count(writer) == 1
