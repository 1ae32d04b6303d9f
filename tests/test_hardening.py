"""Hardening: idempotency keys from a call's place in the run, lenient payloads, lists
that need no describe per row, and the checks the runs list makes first."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.settings import Settings
from tests.conftest import crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.tool_server import ToolServer
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_worker


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with ToolServer() as server:
        yield server


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
