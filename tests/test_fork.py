"""Forks: a new run of an ended run's crew from one step, with edits, reusing every step
the edits do not touch; and replay mode, whose tools answer from the source's record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.settings import Secret, Settings
from tests.conftest import crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.tool_server import ToolServer
from tests.helpers import STEP_KEYS, api_client, create_workflow, get_run, trigger, wait_for_status
from tests.test_events import kinds, read_events
from worker import build_worker


def graph(tag: str) -> list[dict[str, Any]]:
    """planner → (scout, critic) → editor: four agents, two of them side by side."""
    planner, scout, critic, editor = crew("planner", "scout", "critic", "editor", tag=tag)
    scout["after"] = ["planner"]
    critic["after"] = ["planner"]
    editor["after"] = ["scout", "critic"]
    return [planner, scout, critic, editor]


def script(fake: FakeAnthropic, tag: str, *roles: str, times: int = 1) -> None:
    for role in roles:
        for n in range(times):
            fake.reply_text(f"{role} says {n}", tokens_in=10, tokens_out=4,
                            when=for_role(tag, role))


async def fork(api: httpx.AsyncClient, run_id: str, **body: Any) -> httpx.Response:
    return await api.post(f"/v1/runs/{run_id}/fork", json=body)


async def finished(api: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    started = response.json()["data"]
    assert started["status"] == "queued"
    return await wait_for_status(api, started["id"], "completed", "failed", within=60)


async def test_a_fork_from_a_middle_step_reuses_what_the_edit_does_not_touch(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic, temporal: Client,
) -> None:
    tag = unique_tag()
    script(fake_anthropic, tag, "planner", "scout", "critic", "editor")
    workflow = await create_workflow(api, graph(tag))
    source = await wait_for_status(api, (await trigger(api, workflow["id"], "Plan."))["id"],
                                   "completed", within=60)
    fake_anthropic.reply_text("critic, sharper", tokens_in=12, tokens_out=3,
                              when=for_role(tag, "critic"))
    script(fake_anthropic, tag, "editor")
    done = await finished(api, await fork(
        api, source["id"], **{"from": "critic",
                              "agents": {"critic": {"instructions":
                                                    f"You are the critic. [{tag}] Be sharp."}}}))
    assert done["status"] == "completed", done["error"]
    # The fake's call counts: planner and scout ran once (in the source only).
    for role, calls in (("planner", 1), ("scout", 1), ("critic", 2), ("editor", 2)):
        assert fake_anthropic.count(for_role(tag, role)) == calls, role
    by_role = {step["role"]: step for step in source["steps"]}
    steps = {step["role"]: step for step in done["steps"]}
    for role in ("planner", "scout"):
        reused, original = steps[role], by_role[role]
        assert reused["reused_from"] == original["id"] and reused["id"] != original["id"]
        assert {k: reused[k] for k in STEP_KEYS - {"id"}} == {
            k: original[k] for k in STEP_KEYS - {"id"}}
    assert steps["critic"]["output"] == "critic, sharper"
    assert "reused_from" not in steps["critic"] and "reused_from" not in steps["editor"]
    assert "critic, sharper" in steps["editor"]["input"]
    # Totals count only what the fork consumed: two calls.
    assert (done["tokens_in"], done["tokens_out"]) == (12 + 10, 3 + 4)
    assert done["forked_from"] == {"run_id": source["id"], "step_id": by_role["critic"]["id"]}
    # The source is untouched.
    assert await get_run(api, source["id"]) == source
    # The fork's start holds references, not the reused outputs its input and memo carry.
    started = (await temporal.get_workflow_handle(done["id"]).fetch_history()).events[0]
    attributes = started.workflow_execution_started_event_attributes.SerializeToString()
    assert b"planner says 0" not in attributes and b"scout says 0" not in attributes
    assert b"loopllama-files" in attributes
    # Its event stream reads that start through the references.
    told = await read_events(api, done["id"])
    assert kinds(told) == [
        "run.started", "step.started:0", "step.completed:0", "step.started:1",
        "step.completed:1", "step.started:2", "step.completed:2", "step.started:3",
        "step.completed:3", "run.completed"]
    assert told[2]["data"]["data"]["reused_from"] == by_role["planner"]["id"]


async def test_outputs_edited_by_hand_and_a_new_input(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic,
) -> None:
    tag = unique_tag()
    script(fake_anthropic, tag, "planner", "writer", "editor")
    workflow = await create_workflow(api, crew("planner", "writer", "editor", tag=tag))
    source = await wait_for_status(api, (await trigger(api, workflow["id"], "Go."))["id"],
                                   "completed", within=60)
    script(fake_anthropic, tag, "editor")
    edited = await finished(api, await fork(api, source["id"], **{
        "from": "editor", "outputs": {"writer": "A draft written by hand."}}))
    planner, writer, editor = edited["steps"]
    assert "reused_from" in planner and writer["edited"] is True
    assert writer["output"] == "A draft written by hand." and writer["tokens_in"] == 0
    assert "A draft written by hand." in editor["input"]
    assert fake_anthropic.count(for_role(tag, "writer")) == 1
    # A new input runs every step again.
    script(fake_anthropic, tag, "planner", "writer", "editor")
    again = await finished(api, await fork(api, source["id"], **{"from": "planner",
                                                                  "input": "Go again."}))
    assert again["input"] == "Go again."
    assert not any("reused_from" in step for step in again["steps"])
    # A fork of a fork says where both came from.
    script(fake_anthropic, tag, "editor")
    chained = await finished(api, await fork(api, edited["id"], **{"from": "editor"}))
    assert chained["forked_from"]["run_id"] == edited["id"]
    assert chained["forked_from"]["forked_from"]["run_id"] == source["id"]
    assert chained["steps"][1]["edited"] is True


async def test_bad_forks_are_refused_naming_what_is_wrong(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic,
) -> None:
    tag = unique_tag()
    fake_anthropic.reply_text("slow", delay=30, when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("writer", tag=tag))
    running = await trigger(api, workflow["id"], "Write.")
    await wait_for_status(api, running["id"], "running")
    busy = await fork(api, running["id"], **{"from": "writer"})
    assert busy.status_code == 409 and "only a run that has ended" in busy.text
    cancelled = await api.post(f"/v1/runs/{running['id']}/cancel")
    assert cancelled.json()["data"]["status"] == "cancelled"
    for body, says in (
        ({"from": "nobody"}, "no agent with role 'nobody'"),
        ({"from": "writer", "agents": {"ghost": {"model": "loopllama-offline"}}}, "'ghost'"),
        ({"from": "writer", "agents": {"writer": {"temperature": 1}}}, "temperature"),
        ({"from": "writer", "agents": {"writer": {"model": "local/llama3.2"}}}, "'local'"),
        ({"from": "writer", "agents": {"writer": {"tools": ["nope"]}}}, "unknown tool 'nope'"),
        ({"from": "writer", "tools": "sometimes"}, "tools"),
        ({}, "from"),
    ):
        refused = await fork(api, running["id"], **body)
        assert refused.status_code == 400, (body, refused.text)
        assert says in refused.json()["error"]["message"], (body, refused.text)
    assert (await fork(api, "ckrunnothere0000000000000", **{"from": "x"})).status_code == 404
    # A cancelled run forks: its unfinished step runs.
    fake_anthropic.reply_text("done now", when=for_role(tag, "writer"))
    done = await finished(api, await fork(api, running["id"], **{"from": "writer"}))
    assert done["status"] == "completed" and done["output"] == "done now"


async def test_a_failed_run_forks_from_its_failed_step(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic,
) -> None:
    tag = unique_tag()
    script(fake_anthropic, tag, "planner")
    fake_anthropic.reply_error(400, message="bad request", when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    source = await wait_for_status(api, (await trigger(api, workflow["id"], "Go."))["id"],
                                   "failed", within=60)
    script(fake_anthropic, tag, "writer")
    done = await finished(api, await fork(api, source["id"], **{
        "from": "writer", "agents": {"writer": {"max_tokens": 500}}}))
    assert done["status"] == "completed" and done["output"] == "writer says 0"
    assert "reused_from" in done["steps"][0]
    assert fake_anthropic.count(for_role(tag, "planner")) == 1


@pytest.fixture
def tooled(settings: Settings, smtp: FakeSmtp) -> Settings:
    return replace(settings, smtp_url=Secret(smtp.url), http_allowlist=("127.0.0.1",))


async def test_replay_answers_tools_from_the_record_and_counts_misses(
    temporal: Client, tooled: Settings, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    tool_server: ToolServer,
) -> None:
    tag = unique_tag()
    mail = {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada."}
    fetch = {"method": "GET", "url": tool_server.url("/crm")}
    mailer = for_role(tag, "mailer")
    fake_anthropic.reply_tool_use("http_request", fetch, when=mailer)
    fake_anthropic.reply_tool_use("send_email", mail, when=mailer)
    fake_anthropic.reply_text("mailed", when=mailer)
    async with api_client(tooled, temporal) as api, build_worker(temporal, tooled):
        workflow = await create_workflow(
            api, crew("mailer", tag=tag, tools=["send_email", "http_request"]),
            human_in_the_loop={"approval_required_tools": ["send_email"]})
        run = await trigger(api, workflow["id"], "Mail Ada.")
        waiting = await wait_for_status(api, run["id"], "waiting_input", within=30)
        await api.post(f"/v1/runs/{run['id']}/respond", json={"action": "approve"})
        source = await wait_for_status(api, run["id"], "completed", within=30)
        assert len(smtp.messages()) == 1 and len(tool_server.requests()) == 1
        # The same calls, then one with another input: a miss.
        fake_anthropic.reply_tool_use("http_request", fetch, when=mailer)
        fake_anthropic.reply_tool_use("send_email", mail, when=mailer)
        fake_anthropic.reply_tool_use("send_email", {**mail, "subject": "Other"}, when=mailer)
        fake_anthropic.reply_text("mailed again", when=mailer)
        done = await finished(api, await fork(api, source["id"], **{
            "from": "mailer", "tools": "replay",
            "agents": {"mailer": {"instructions": f"You are the mailer. [{tag}] Be kind."}}}))
        conversation = fake_anthropic.requests_matching(mailer)[-1].body
    assert waiting["pending"]["tool"] == "send_email"
    assert done["status"] == "completed" and done["output"] == "mailed again"
    # Nothing acted on the world again, and no one was asked to approve.
    assert len(smtp.messages()) == 1 and len(tool_server.requests()) == 1
    [step] = done["steps"]
    assert step["replay_misses"] == 1
    assert conversation is not None
    results = [block for message in conversation["messages"] if message["role"] == "user"
               and isinstance(message["content"], list) for block in message["content"]
               if block.get("type") == "tool_result"]
    assert len(results) == 3 and results[2]["is_error"] is True
    assert "no recorded result" in str(results[2]["content"])
