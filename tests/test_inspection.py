"""The Temporal UI as an inspection tool: what a run shows while it waits and runs, the
crew's name on every run, and failures without SDK stack traces."""

from __future__ import annotations

import logging

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client
from temporalio.worker import Worker

from cli.serve import ui_run_lists
from core.settings import Settings
from tests.conftest import crew, eventually, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_worker

OFFLINE = "loopllama-offline"


async def current_details(temporal: Client, run_id: str) -> str:
    metadata = await temporal.get_workflow_handle(run_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return str(metadata.current_details)


async def test_a_waiting_run_says_what_it_waits_for_and_how_to_answer(
    api: httpx.AsyncClient, worker: Worker, temporal: Client, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    mailer = for_role(tag, "mailer")
    email = {"to": "bob@example.com", "subject": "Launch", "body": "Monday."}
    fake_anthropic.reply_tool_use("send_email", email, when=mailer)
    workflow = await create_workflow(
        api, crew("planner", tag=tag) + crew("mailer", tag=tag, tools=["send_email"]),
        human_in_the_loop={"approval_required_tools": ["send_email"]},
    )
    run_id = (await trigger(api, workflow["id"], "Announce."))["id"]
    paused = await wait_for_status(api, run_id, "waiting_input")
    details = await current_details(temporal, run_id)
    assert "Waiting for a human: approval" in details
    assert paused["pending"]["prompt"] in details
    assert "`send_email`" in details and "bob@example.com" in details
    assert f"POST /v1/runs/{run_id}/respond" in details
    assert paused["pending"]["id"] in details
    assert f"loopllama runs respond {run_id} --approve" in details
    await api.post(f"/v1/runs/{run_id}/cancel")
    assert (await current_details(temporal, run_id)).startswith("**Cancelled**")


async def test_a_running_step_says_which_of_how_many(
    api: httpx.AsyncClient, worker: Worker, temporal: Client, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    fake_anthropic.reply_text("later", delay=30, when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", "editor", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Draft."))["id"]

    async def on_step_two() -> str | None:
        details = await current_details(temporal, run_id)
        return details if "Step 2" in details else None

    details = await eventually(on_step_two)
    assert details == "**Step 2 of 3**: writer (claude-sonnet-4-6)"
    await api.post(f"/v1/runs/{run_id}/cancel")


async def test_runs_carry_their_crew_name_for_the_ui_list(
    api: httpx.AsyncClient, worker: Worker, temporal: Client
) -> None:
    name = f"Launch crew {unique_tag()}"
    workflow = await create_workflow(api, crew("a", model=OFFLINE), name=name)
    run_id = (await trigger(api, workflow["id"], "x"))["id"]
    await wait_for_status(api, run_id, "completed")

    async def listed() -> list[str] | None:
        ids = [row.id async for row in temporal.list_workflows(f"LoopLlamaCrew = '{name}'")]
        return ids or None

    assert await eventually(listed) == [run_id]


def test_dev_prints_list_links_for_the_ui() -> None:
    labels = [label for label, _ in ui_run_lists()]
    assert labels == ["waiting for a human:", "failed runs:", "all runs:"]
    waiting = dict(ui_run_lists())["waiting for a human:"]
    assert "LoopLlamaStatus" in waiting and "waiting_input" in waiting and " " not in waiting


async def test_failures_carry_the_message_not_a_stack_trace(
    api: httpx.AsyncClient, temporal: Client, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dataclasses import replace

    workflow = await create_workflow(api, crew("writer"))
    caplog.set_level(logging.DEBUG)
    async with build_worker(temporal, replace(settings, anthropic_api_key=None)):
        run_id = (await trigger(api, workflow["id"], "Write."))["id"]
        run = await wait_for_status(api, run_id, "failed")
    failures = {}
    async for event in temporal.get_workflow_handle(run_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failures["activity"] = event.activity_task_failed_event_attributes.failure
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failures["run"] = event.workflow_execution_failed_event_attributes.failure
    assert failures["run"].message == run["error"]
    assert failures["run"].stack_trace == ""
    assert "needs ANTHROPIC_API_KEY" in failures["activity"].cause.message or \
        "needs ANTHROPIC_API_KEY" in failures["activity"].message
    assert failures["activity"].stack_trace == "" and failures["activity"].cause.stack_trace == ""
    # The worker log: one warning line for the expected error, no traceback.
    told = [r for r in caplog.records
            if "needs ANTHROPIC_API_KEY" in r.getMessage() and r.levelno >= logging.INFO]
    assert len(told) == 1 and told[0].levelno == logging.WARNING and told[0].exc_info is None
    assert all(r.exc_info is None for r in caplog.records
               if r.levelno >= logging.WARNING and r.name.startswith("temporalio"))
