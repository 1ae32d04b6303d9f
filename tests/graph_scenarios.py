"""Crew-graph runs for tests/record_histories.py: a fan-out and its join, two pauses open
at once, a failed branch with its siblings cancelled, and a retried fan-out."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.conftest import eventually, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, get_run, trigger, wait_for_status

MODEL = "claude-sonnet-4-6"


def _agent(role: str, tag: str, after: list[str] | None = None, **fields: Any
           ) -> dict[str, Any]:
    body = {"role": role, "model": MODEL, "instructions": f"You are the {role}. [{tag}]",
            **fields}
    return body if after is None else {**body, "after": after}


def _fan_out(tag: str, **fields: Any) -> list[dict[str, Any]]:
    return [_agent("planner", tag), *(_agent(r, tag, ["planner"], **fields) for r in "abc"),
            _agent("editor", tag, ["a", "b", "c"])]


async def _paused(api: httpx.AsyncClient, run_id: str, count: int) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        run = await get_run(api, run_id)
        return run if len(run["pauses"]) == count else None

    return await eventually(ready, within=60)


async def fan_out_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    for role in ("planner", "a", "b", "c", "editor"):
        fake.reply_text(f"{role} out", when=for_role(tag, role))
    workflow = await create_workflow(api, _fan_out(tag), max_parallel=2)
    run = await trigger(api, workflow["id"], "Fan out.")
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def two_pauses_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    for role in ("left", "right"):
        email = {"to": f"{role}@example.com", "subject": role, "body": f"From {role}."}
        fake.reply_tool_use("send_email", email, when=for_role(tag, role))
        fake.reply_text(f"{role} done", when=for_role(tag, role))
    fake.reply_text("joined", when=for_role(tag, "join"))
    workflow = await create_workflow(
        api, [_agent("left", tag, [], tools=["send_email"]),
              _agent("right", tag, [], tools=["send_email"]),
              _agent("join", tag, ["left", "right"])],
        human_in_the_loop={"approval_required_tools": ["send_email"]})
    run = await trigger(api, workflow["id"], "Mail both.")
    paused = await _paused(api, run["id"], 2)
    newer, older = paused["pauses"][1], paused["pauses"][0]
    for body in ({"action": "approve", "pause_id": newer["id"]},
                 {"action": "reject", "reason": "no", "pause_id": older["id"]}):
        response = await api.post(f"/v1/runs/{run['id']}/respond", json=body)
        assert response.status_code == 202, response.text
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])


async def failed_branch_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    breaks = threading.Event()
    fake.reply_tool_use("ask_human", {"question": "Tone?"}, when=for_role(tag, "asker"))
    fake.reply_error(400, message="bad request", when=for_role(tag, "breaker"), hold=breaks)
    workflow = await create_workflow(
        api, [_agent("asker", tag, []), _agent("breaker", tag, []),
              _agent("join", tag, ["asker", "breaker"])],
        human_in_the_loop={"allow_input_requests": True})
    run = await trigger(api, workflow["id"], "Go.")
    await _paused(api, run["id"], 1)
    breaks.set()
    await wait_for_status(api, run["id"], "failed", within=60)
    return str(run["id"])


async def retried_fan_out_run(api: httpx.AsyncClient, fake: FakeAnthropic) -> str:
    tag = unique_tag()
    c_fails, b_answers = threading.Event(), threading.Event()
    fake.reply_text("the plan", when=for_role(tag, "planner"))
    fake.reply_text("a out", when=for_role(tag, "a"))
    fake.reply_tool_use("http_request", {"url": "ftp://nowhere"}, when=for_role(tag, "b"))
    fake.reply_text("b lost", when=for_role(tag, "b"), hold=b_answers)
    fake.reply_error(400, message="c broke", when=for_role(tag, "c"), hold=c_fails)
    workflow = await create_workflow(api, _fan_out(tag, tools=["http_request"]))
    run = await trigger(api, workflow["id"], "Fan out.")

    async def b_on_its_second_call() -> bool:
        return fake.count(for_role(tag, "b")) == 2 and fake.count(for_role(tag, "c")) == 1

    await eventually(b_on_its_second_call, within=60)
    c_fails.set()
    await wait_for_status(api, run["id"], "failed", within=60)
    b_answers.set()
    for role in ("b", "c", "editor"):
        fake.reply_text(f"{role} out", when=for_role(tag, role))
    response = await api.post(f"/v1/runs/{run['id']}/retry")
    assert response.status_code == 202, response.text
    await wait_for_status(api, run["id"], "completed", within=60)
    return str(run["id"])
