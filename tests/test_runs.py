"""Runs, checked against the customer's reference (../shared/spec/runs-api.md)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.settings import Settings
from core.temporal import SA_STATUS, SA_WORKFLOW_ID
from tests.conftest import crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import (
    RUN_KEYS,
    STEP_KEYS,
    TIMESTAMP,
    create_workflow,
    get_run,
    trigger,
    wait_for_status,
)
from worker import build_worker

BRIEF = "Draft a 200-word brief on a new feature-flag system."


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_two_agent_run_matches_the_reference(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    fake_anthropic.reply_text("1. Define feature flags...", tokens_in=180, tokens_out=120,
                              when=for_role(tag, "planner"))
    fake_anthropic.reply_text("Feature flags let teams ship safely...", tokens_in=232,
                              tokens_out=166, when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))

    queued = await trigger(api, workflow["id"], BRIEF)
    assert set(queued) == RUN_KEYS
    assert queued["id"].startswith("ckrun")
    assert queued["workflow_id"] == workflow["id"]
    assert queued["status"] == "queued"
    assert queued["input"] == BRIEF
    assert (queued["output"], queued["error"], queued["pending"]) == (None, None, None)
    assert (queued["total_steps"], queued["tokens_in"], queued["tokens_out"]) == (0, 0, 0)
    assert (queued["started_at"], queued["finished_at"]) == (None, None)
    assert TIMESTAMP.match(queued["created_at"])

    run = await wait_for_status(api, queued["id"], "completed", "failed")
    assert set(run) == RUN_KEYS | {"steps"}
    assert run["status"] == "completed", run["error"]
    assert run["output"] == "Feature flags let teams ship safely..."
    assert run["error"] is None and run["pending"] is None
    assert (run["total_steps"], run["tokens_in"], run["tokens_out"]) == (2, 412, 286)
    assert run["created_at"] == queued["created_at"]
    for key in ("started_at", "finished_at", "created_at"):
        assert TIMESTAMP.match(run[key]), key
    assert parse(run["created_at"]) <= parse(run["started_at"]) <= parse(run["finished_at"])

    planner, writer = run["steps"]
    for step in (planner, writer):
        assert set(step) == STEP_KEYS
        assert step["id"].startswith("ckstep")
        assert step["model"] == "claude-sonnet-4-6"
        assert step["error"] is None
        assert TIMESTAMP.match(step["started_at"]) and TIMESTAMP.match(step["finished_at"])
    assert planner["id"] != writer["id"]
    assert (planner["order"], planner["role"]) == (0, "planner")
    assert (writer["order"], writer["role"]) == (1, "writer")
    assert planner["input"] == BRIEF
    assert writer["input"] == (
        f"Original request:\n{BRIEF}\n\nPrior agent output:\n--- planner ---\n"
        "1. Define feature flags..."
    )
    assert planner["output"] == "1. Define feature flags..."
    assert (planner["tokens_in"], planner["tokens_out"]) == (180, 120)
    assert (writer["tokens_in"], writer["tokens_out"]) == (232, 166)
    assert parse(planner["finished_at"]) <= parse(writer["started_at"])
    assert parse(writer["finished_at"]) <= parse(run["finished_at"])

    # The writer's model call received exactly the step input as its prompt.
    (writer_call,) = fake_anthropic.requests_matching(for_role(tag, "writer"))
    assert writer_call.body is not None
    assert writer_call.body["messages"] == [{"role": "user", "content": writer["input"]}]
    assert writer_call.body["model"] == "claude-sonnet-4-6"


async def test_three_agents_each_see_every_earlier_output(
    api: httpx.AsyncClient, worker: Any
) -> None:
    workflow = await create_workflow(
        api, crew("planner", "writer", "editor", model="loopllama-offline")
    )
    run = await wait_for_status(api, (await trigger(api, workflow["id"], "Go."))["id"],
                                "completed")
    planner, writer, editor = run["steps"]
    assert editor["input"] == (
        "Original request:\nGo.\n\nPrior agent output:\n"
        f"--- planner ---\n{planner['output']}\n\n--- writer ---\n{writer['output']}"
    )
    assert run["output"] == editor["output"]
    assert run["tokens_in"] == sum(s["tokens_in"] for s in run["steps"])
    assert run["tokens_out"] == sum(s["tokens_out"] for s in run["steps"])


async def test_list_and_trigger_omit_steps(api: httpx.AsyncClient, worker: Any) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    queued = await trigger(api, workflow["id"], "hello")
    assert "steps" not in queued
    await wait_for_status(api, queued["id"], "completed")
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [r["id"] for r in listed] == [queued["id"]]
    assert set(listed[0]) == RUN_KEYS
    assert listed[0]["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"input": ""}, "input"),
        ({"input": "x" * 16_001}, "input"),
        ({}, "input"),
        ({"input": 5}, "input"),
        ({"input": "ok", "extra": True}, "extra"),
    ],
)
async def test_trigger_rejects_bad_input(
    api: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    response = await api.post(f"/v1/workflows/{workflow['id']}/runs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fragment in response.json()["error"]["message"]
    listed = await api.get(f"/v1/workflows/{workflow['id']}/runs")
    assert listed.json()["data"] == []


async def test_trigger_accepts_16000_characters(api: httpx.AsyncClient) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    run = await trigger(api, workflow["id"], "x" * 16_000)
    assert len(run["input"]) == 16_000


async def test_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    for method, path in (
        ("POST", "/v1/workflows/ckva000000000000000000000/runs"),
        ("GET", "/v1/workflows/ckva000000000000000000000/runs"),
        ("GET", "/v1/runs/ckrun000000000000000000000"),
        ("GET", "/v1/runs/not-a-run"),
    ):
        response = await api.request(method, path, json={"input": "x"})
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["type"] == "not_found_error"


async def test_a_definition_id_is_not_a_run(api: httpx.AsyncClient) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    assert (await api.get(f"/v1/runs/{workflow['id']}")).status_code == 404


async def test_paused_workflow_refuses_runs_with_409(
    api: httpx.AsyncClient, worker: Any
) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    assert (await api.post(f"/v1/workflows/{workflow['id']}/pause")).status_code == 200
    response = await api.post(f"/v1/workflows/{workflow['id']}/runs", json={"input": "x"})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict_error"
    assert "resume" in response.json()["error"]["message"]
    assert (await api.post(f"/v1/workflows/{workflow['id']}/resume")).status_code == 200
    await trigger(api, workflow["id"], "x")


async def test_deleted_workflow_keeps_its_runs_readable(
    api: httpx.AsyncClient, worker: Any
) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    run = await trigger(api, workflow["id"], "x")
    await wait_for_status(api, run["id"], "completed")
    assert (await api.delete(f"/v1/workflows/{workflow['id']}")).status_code == 200
    assert (await get_run(api, run["id"]))["status"] == "completed"
    response = await api.post(f"/v1/workflows/{workflow['id']}/runs", json={"input": "x"})
    assert response.status_code == 404


async def test_rate_limited_twice_then_success_counts_tokens_once(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_error(429, message="slow down", when=writer)
    fake_anthropic.reply_error(429, message="slow down", when=writer)
    fake_anthropic.reply_text("done", tokens_in=10, tokens_out=3, when=writer)
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run = await wait_for_status(
        api, (await trigger(api, workflow["id"], "x"))["id"], "completed", "failed", within=60
    )
    assert run["status"] == "completed", run["error"]
    assert fake_anthropic.count(writer) == 3
    assert len(run["steps"]) == 1 and run["total_steps"] == 1
    assert (run["tokens_in"], run["tokens_out"]) == (10, 3)
    assert run["output"] == "done"


async def test_model_bad_request_fails_the_run_naming_the_step(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    fake_anthropic.reply_text("plan", tokens_in=5, tokens_out=1, when=for_role(tag, "planner"))
    fake_anthropic.reply_error(400, message="max_tokens: too large", when=for_role(tag, "writer"))
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    run = await wait_for_status(api, (await trigger(api, workflow["id"], "x"))["id"],
                                "completed", "failed")
    assert run["status"] == "failed"
    assert run["error"].startswith("Step 2 (writer) failed: ")
    assert "max_tokens: too large" in run["error"]
    assert run["output"] is None
    assert TIMESTAMP.match(run["finished_at"])
    planner, writer = run["steps"]
    assert planner["output"] == "plan" and planner["error"] is None
    assert writer["output"] is None and "max_tokens: too large" in writer["error"]
    assert TIMESTAMP.match(writer["finished_at"])
    # Not retried: a bad request cannot pass by waiting.
    assert fake_anthropic.count(for_role(tag, "writer")) == 1


async def test_missing_anthropic_key_fails_with_advice(
    api: httpx.AsyncClient, temporal: Client, settings: Settings
) -> None:
    from dataclasses import replace

    keyless = replace(settings, anthropic_api_key=None)
    workflow = await create_workflow(api, crew("writer"))
    async with build_worker(temporal, keyless):
        run = await wait_for_status(api, (await trigger(api, workflow["id"], "x"))["id"],
                                    "failed")
    assert "ANTHROPIC_API_KEY" in run["error"]
    assert run["error"].startswith("Step 1 (writer) failed: ")


async def test_run_stays_queued_without_a_worker_then_completes(
    api: httpx.AsyncClient, temporal: Client, settings: Settings
) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    run = await trigger(api, workflow["id"], "wait for me")
    # Reads work with no worker at all and show the published state.
    for _ in range(3):
        seen = await get_run(api, run["id"])
        assert seen["status"] == "queued"
        assert seen["started_at"] is None and seen["total_steps"] == 0 and seen["steps"] == []
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [r["status"] for r in listed] == ["queued"]
    async with build_worker(temporal, settings):
        done = await wait_for_status(api, run["id"], "completed")
    assert done["started_at"] is not None
    assert parse(done["started_at"]) >= parse(done["created_at"])


async def test_edits_do_not_change_a_started_run(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    release = threading.Event()
    fake_anthropic.reply_text("first", when=for_role(tag, "planner"), hold=release)
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    run = await trigger(api, workflow["id"], "x")
    await asyncio.to_thread(
        lambda: fake_anthropic.wait_for_requests(1, timeout=20.0)
        and fake_anthropic.requests_matching(for_role(tag, "planner"))
    )
    await wait_for_status(api, run["id"], "running")
    patched = await api.patch(
        f"/v1/workflows/{workflow['id']}",
        json={"crew": [{"role": "rewritten", "model": "loopllama-offline"}]},
    )
    assert patched.status_code == 200, patched.text
    assert (await api.post(f"/v1/workflows/{workflow['id']}/pause")).status_code == 200
    release.set()
    done = await wait_for_status(api, run["id"], "completed")
    assert [s["role"] for s in done["steps"]] == ["planner", "writer"]
    assert [s["model"] for s in done["steps"]] == ["claude-sonnet-4-6"] * 2


async def test_runs_are_searchable_in_the_temporal_ui(
    api: httpx.AsyncClient, worker: Any, temporal: Client
) -> None:
    workflow = await create_workflow(api, crew("planner", "writer", model="loopllama-offline"))
    run = await trigger(api, workflow["id"], "x")
    await wait_for_status(api, run["id"], "completed")
    query = (
        f"{SA_WORKFLOW_ID.name} = '{workflow['id']}' AND {SA_STATUS.name} = 'completed'"
    )

    async def listed() -> list[str]:
        return [w.id async for w in temporal.list_workflows(query)]

    from tests.conftest import eventually

    assert await eventually(listed) == [run["id"]]
    history = await temporal.get_workflow_handle(run["id"]).fetch_history()
    summaries = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payload = event.user_metadata.summary
            summaries.append(payload.data.decode())
    assert summaries == ['"planner · loopllama-offline"', '"writer · loopllama-offline"']


async def test_a_long_crew_with_large_outputs_completes_and_reads_back(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    """20 agents x 30,000 characters: inputs would repeat outputs ~190 times (5.7 MB)."""
    tag = unique_tag()
    roles = [f"agent{i:02d}" for i in range(20)]
    outputs = {role: f"{role} says " + "z" * 30_000 for role in roles}
    for role in roles:
        fake_anthropic.reply_text(outputs[role], tokens_in=1, tokens_out=1,
                                  when=for_role(tag, role))
    workflow = await create_workflow(api, crew(*roles, tag=tag))
    run = await wait_for_status(api, (await trigger(api, workflow["id"], "go"))["id"],
                                "completed", "failed", within=120)
    assert run["status"] == "completed", run["error"]
    assert [s["output"] for s in run["steps"]] == [outputs[r] for r in roles]
    last = run["steps"][-1]["input"]
    assert last.startswith("Original request:\ngo\n\nPrior agent output:\n--- agent00 ---\n")
    assert all(f"--- {r} ---\n{outputs[r]}" in last for r in roles[:-1])
    (last_call,) = fake_anthropic.requests_matching(for_role(tag, roles[-1]))
    assert last_call.body is not None
    assert last_call.body["messages"][0]["content"] == last
