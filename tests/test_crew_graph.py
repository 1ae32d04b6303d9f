"""Crew graphs: agents that run side by side and join, pauses in several branches at once,
failures that stop the siblings, and retries that pay for nothing twice.

Every model reply is scripted per agent (`for_role`), so which call ran, when, and how
often is exact; the fake's held replies make "two at once" a condition, not a timing.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from core.settings import Secret, Settings
from tests.conftest import eventually, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.smtp_server import FakeSmtp
from tests.helpers import create_workflow, get_run, trigger, wait_for_status
from tests.test_events import read_events
from tests.test_inspection import current_details
from worker import build_worker

MODEL = "claude-sonnet-4-6"


def agent(role: str, tag: str, after: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"role": role, "model": MODEL,
                            "instructions": f"You are the {role}. [{tag}]", **fields}
    if after is not None:
        body["after"] = after
    return body


def fan_out(tag: str, **fields: Any) -> list[dict[str, Any]]:
    """planner -> (a, b, c) -> editor(a, b)."""
    return [
        agent("planner", tag, **fields),
        agent("a", tag, ["planner"], **fields),
        agent("b", tag, ["planner"], **fields),
        agent("c", tag, ["planner"], **fields),
        agent("editor", tag, ["a", "b"], **fields),
    ]


@pytest.fixture
async def mail_worker(temporal: Client, settings: Settings, smtp: FakeSmtp
                      ) -> AsyncIterator[Worker]:
    """A worker that can send email (to the fake SMTP server)."""
    with_mail = replace(settings, smtp_url=Secret(smtp.url), smtp_from="crew@example.com")
    async with build_worker(temporal, with_mail) as running:
        yield running


# ----------------------------------------------------------------------- the crew's shape


@pytest.mark.parametrize(("crew", "says"), [
    ([{"role": "a", "after": ["ghost"]}], "names 'ghost' in 'after', but no agent has"),
    ([{"role": "a"}, {"role": "b", "after": ["c"]}, {"role": "c"}],
     "names 'c' in 'after', which comes later"),
    ([{"role": "a"}, {"role": "b", "after": ["a", "a"]}], "more than once"),
    ([{"role": "a", "after": ["a"]}], "cannot wait for itself"),
])
async def test_after_must_name_earlier_agents(
    api: httpx.AsyncClient, crew: list[dict[str, Any]], says: str
) -> None:
    body = {"name": "bad", "crew": [{"model": MODEL, **a} for a in crew]}
    response = await api.post("/v1/workflows", json=body)
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert says in message
    assert "agent " in message  # names the agent whose after is wrong
    assert (await api.get("/v1/workflows")).status_code == 200


@pytest.mark.parametrize("max_parallel", [0, 65, "4", 2.5, None])
async def test_max_parallel_is_1_to_64(api: httpx.AsyncClient, max_parallel: Any) -> None:
    body = {"name": "bad", "crew": [{"role": "a", "model": MODEL}],
            "max_parallel": max_parallel}
    response = await api.post("/v1/workflows", json=body)
    assert response.status_code == 400, response.text
    assert "max_parallel" in response.json()["error"]["message"]


async def test_after_and_max_parallel_are_stored_and_patched(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    tag = unique_tag()
    created = await create_workflow(api, fan_out(tag))
    assert created["max_parallel"] == 8
    assert [a.get("after") for a in created["crew"]] == [
        None, ["planner"], ["planner"], ["planner"], ["a", "b"]]
    patched = await api.patch(f"/v1/workflows/{created['id']}", json={"max_parallel": 3})
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["max_parallel"] == 3
    refused = await api.patch(f"/v1/workflows/{created['id']}",
                              json={"crew": [agent("x", tag, ["y"])]})
    assert refused.status_code == 400
    assert (await api.get(f"/v1/workflows/{created['id']}")).json()["data"]["max_parallel"] == 3


# -------------------------------------------------------------------------- scheduling


async def test_fan_out_and_join(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    held = threading.Event()
    fake_anthropic.reply_text("the plan", tokens_in=3, tokens_out=2,
                              when=for_role(tag, "planner"))
    # a and c are held until b has started too: all three run at once.
    for role in ("a", "b", "c"):
        fake_anthropic.reply_text(f"{role} done", tokens_in=5, tokens_out=4,
                                  when=for_role(tag, role), hold=held)
    fake_anthropic.reply_text("the brief", tokens_in=7, tokens_out=6,
                              when=for_role(tag, "editor"))
    workflow = await create_workflow(api, fan_out(tag))
    run = await trigger(api, workflow["id"], "Brief it.")
    try:
        async def three_working() -> dict[str, Any] | None:
            current = await get_run(api, run["id"])
            working = [s for s in current["steps"] if s["finished_at"] is None]
            called = all(fake_anthropic.count(for_role(tag, r)) == 1 for r in ("a", "b", "c"))
            return current if len(working) == 3 and called else None

        middle = await eventually(three_working, within=30)
        assert middle["status"] == "running" and middle["total_steps"] == 4
    finally:
        held.set()
    done = await wait_for_status(api, run["id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "the brief"
    assert done["total_steps"] == 5
    # Listed in the order they started; ties by position. `order` stays the position.
    assert [(s["role"], s["order"]) for s in done["steps"]] == [
        ("planner", 0), ("a", 1), ("b", 2), ("c", 3), ("editor", 4)]
    inputs = {s["role"]: s["input"] for s in done["steps"]}
    after_plan = "Original request:\nBrief it.\n\nPrior agent output:\n--- planner ---\nthe plan"
    assert inputs["planner"] == "Brief it."
    assert inputs["a"] == inputs["b"] == inputs["c"] == after_plan
    # The editor reads its ancestors (transitively), in crew order, and not c.
    assert inputs["editor"] == f"{after_plan}\n\n--- a ---\na done\n\n--- b ---\nb done"
    assert (done["tokens_in"], done["tokens_out"]) == (3 + 15 + 7, 2 + 12 + 6)
    # The event stream tells the same steps; two step.started come back to back.
    kinds = [event["event"] for event in await read_events(api, run["id"])]
    assert kinds.count("step.started") == 5 and kinds[-1] == "run.completed"
    assert "step.started\nstep.started" in "\n".join(kinds)


async def test_after_empty_starts_at_once_from_the_run_input(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    held = threading.Event()
    fake_anthropic.reply_text("slow first", when=for_role(tag, "first"), hold=held)
    fake_anthropic.reply_text("independent", when=for_role(tag, "second"))
    fake_anthropic.reply_text("last", when=for_role(tag, "third"))
    workflow = await create_workflow(api, [
        agent("first", tag), agent("second", tag, []), agent("third", tag)])
    run = await trigger(api, workflow["id"], "Go.")
    try:
        async def second_done() -> bool:
            steps = (await get_run(api, run["id"]))["steps"]
            return any(s["role"] == "second" and s["output"] for s in steps)

        await eventually(second_done, within=30)
    finally:
        held.set()
    done = await wait_for_status(api, run["id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    steps = {s["role"]: s for s in done["steps"]}
    assert steps["second"]["input"] == "Go."
    # `third` has no `after`: the agent before it (second), and transitively nothing more.
    assert steps["third"]["input"] == (
        "Original request:\nGo.\n\nPrior agent output:\n--- second ---\nindependent")
    assert done["output"] == "last"


async def test_max_parallel_bounds_the_agents_working_at_once(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    roles = ["w1", "w2", "w3", "w4", "w5"]
    gates = {role: threading.Event() for role in roles}
    for role in roles:
        fake_anthropic.reply_text(f"{role} out", when=for_role(tag, role), hold=gates[role])
    workflow = await create_workflow(api, [agent(r, tag, []) for r in roles], max_parallel=2)
    run = await trigger(api, workflow["id"], "Work.")

    def called() -> list[str]:
        return [r for r in roles if fake_anthropic.count(for_role(tag, r))]

    try:
        # Two at a time, in crew order: each release lets exactly the next one start.
        for released, expected in [(None, 2), ("w1", 3), ("w2", 4), ("w3", 5)]:
            if released is not None:
                gates[released].set()

            async def started(expected: int = expected) -> list[str] | None:
                now = called()
                return now if len(now) >= expected else None

            now = await eventually(started, within=30)
            assert now == roles[:expected]
            current = await get_run(api, run["id"])
            assert sum(s["finished_at"] is None for s in current["steps"]) <= 2, current
    finally:
        for gate in gates.values():
            gate.set()
    done = await wait_for_status(api, run["id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "w5 out"


# ------------------------------------------------------------------------------ pauses


async def test_two_approvals_in_two_branches_answered_by_pause_id(
    api: httpx.AsyncClient, mail_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    temporal: Client,
) -> None:
    tag = unique_tag()
    emails = {
        "left": {"to": "ann@example.com", "subject": "Left", "body": "From the left."},
        "right": {"to": "bob@example.com", "subject": "Right", "body": "From the right."},
    }
    for role, email in emails.items():
        fake_anthropic.reply_tool_use("send_email", email, when=for_role(tag, role))
        fake_anthropic.reply_text(f"{role} sent", when=for_role(tag, role))
    fake_anthropic.reply_text("joined", when=for_role(tag, "join"))
    workflow = await create_workflow(
        api,
        [agent("left", tag, [], tools=["send_email"]),
         agent("right", tag, [], tools=["send_email"]),
         agent("join", tag, ["left", "right"])],
        human_in_the_loop={"approval_required_tools": ["send_email"]},
    )
    run_id = (await trigger(api, workflow["id"], "Mail both."))["id"]

    async def both_paused() -> dict[str, Any] | None:
        current = await get_run(api, run_id)
        return current if len(current["pauses"]) == 2 else None

    paused = await eventually(both_paused, within=30)
    assert paused["status"] == "waiting_input"
    by_role = {p["role"]: p for p in paused["pauses"]}
    assert set(by_role) == {"left", "right"}
    assert by_role["left"]["tool_input"] == emails["left"]
    steps = {s["role"]: s["id"] for s in paused["steps"]}
    assert all(by_role[r]["step_id"] == steps[r] for r in by_role)
    # `pending` is the oldest pause, in the reference's shape.
    oldest = paused["pauses"][0]
    assert paused["pending"] == {k: v for k, v in oldest.items() if k not in ("step_id", "role")}
    # The Temporal UI's current details show both, each with how to answer it.
    details = await current_details(temporal, run_id)
    assert details.count("**Waiting for a human: approval") == 2
    assert all(f"--pause-id {p['id']}" in details for p in paused["pauses"])
    assert "**Step 1 of 3**: left" in details and "**Step 2 of 3**: right" in details

    # Answer the newer one first: the run stays waiting on the other.
    newer = paused["pauses"][1]
    wrong = await api.post(f"/v1/runs/{run_id}/respond",
                           json={"action": "input", "input": "x", "pause_id": newer["id"]})
    assert wrong.status_code == 400
    first = await api.post(f"/v1/runs/{run_id}/respond",
                           json={"action": "approve", "pause_id": newer["id"]})
    assert first.status_code == 202, first.text
    assert first.json()["data"] == {"id": run_id, "status": "waiting_input"}
    again = await api.post(f"/v1/runs/{run_id}/respond",
                           json={"action": "approve", "pause_id": newer["id"]})
    assert again.status_code == 409
    unknown = await api.post(f"/v1/runs/{run_id}/respond",
                             json={"action": "approve", "pause_id": "ckpause0000000000000000000"})
    assert unknown.status_code == 409

    async def one_left() -> dict[str, Any] | None:
        current = await get_run(api, run_id)
        return current if [p["id"] for p in current["pauses"]] == [oldest["id"]] else None

    still = await eventually(one_left, within=30)
    assert still["status"] == "waiting_input"
    assert still["pending"]["id"] == oldest["id"]
    second = await api.post(f"/v1/runs/{run_id}/respond",
                            json={"action": "reject", "reason": "not now",
                                  "pause_id": oldest["id"]})
    assert second.status_code == 202, second.text
    assert second.json()["data"] == {"id": run_id, "status": "running"}

    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["pauses"] == [] and done["pending"] is None
    sent = [received.recipients for received in smtp.messages()]
    assert sent == [[emails[newer["role"]]["to"]]]  # the approved one, once; not the other


async def test_respond_without_pause_id_answers_the_oldest_and_never_two(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    for role in ("p", "q"):
        fake_anthropic.reply_tool_use("ask_human", {"question": f"{role}?"},
                                      when=for_role(tag, role))
        fake_anthropic.reply_text(f"{role} answered", when=for_role(tag, role))
    workflow = await create_workflow(
        api, [agent("p", tag, []), agent("q", tag, [])],
        human_in_the_loop={"allow_input_requests": True})
    run_id = (await trigger(api, workflow["id"], "Ask."))["id"]

    async def both_paused() -> dict[str, Any] | None:
        current = await get_run(api, run_id)
        return current if len(current["pauses"]) == 2 else None

    paused = await eventually(both_paused, within=30)
    oldest = paused["pending"]["id"]
    answered = await api.post(f"/v1/runs/{run_id}/respond",
                              json={"action": "input", "input": "first"})
    assert answered.status_code == 202
    remaining = (await get_run(api, run_id))["pauses"]
    assert oldest not in [p["id"] for p in remaining]
    assert len(remaining) == 1
    done_later = await api.post(f"/v1/runs/{run_id}/respond",
                                json={"action": "input", "input": "second"})
    assert done_later.status_code == 202
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]


# ------------------------------------------------------------------ failure and control


async def test_a_failing_branch_fails_the_run_while_another_waits_for_a_person(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    held = threading.Event()
    fake_anthropic.reply_tool_use("ask_human", {"question": "Tone?"}, when=for_role(tag, "asker"))
    fake_anthropic.reply_text("never", when=for_role(tag, "slow"), hold=held)
    fake_anthropic.reply_error(400, message="bad request", when=for_role(tag, "breaker"),
                               hold=held)
    workflow = await create_workflow(
        api, [agent("asker", tag, []), agent("slow", tag, []), agent("breaker", tag, []),
              agent("after", tag, ["asker", "slow", "breaker"])],
        human_in_the_loop={"allow_input_requests": True})
    run_id = (await trigger(api, workflow["id"], "Go."))["id"]

    async def all_three_called() -> dict[str, Any] | None:
        current = await get_run(api, run_id)
        called = all(fake_anthropic.count(for_role(tag, r)) for r in ("slow", "breaker"))
        return current if called and current["status"] == "waiting_input" else None

    await eventually(all_three_called, within=30)
    held.set()
    failed = await wait_for_status(api, run_id, "failed", "completed")
    assert failed["error"].startswith("Step 3 (breaker) failed: The model API rejected")
    steps = {s["role"]: s for s in failed["steps"]}
    assert "bad request" in steps["breaker"]["error"]
    assert steps["asker"]["error"] == "cancelled"
    assert failed["pending"] is None and failed["pauses"] == []
    assert "after" not in steps  # no other agent starts
    late = await api.post(f"/v1/runs/{run_id}/respond", json={"action": "input", "input": "x"})
    assert late.status_code == 409


async def test_cancel_during_a_fan_out_stops_every_branch(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    never = threading.Event()
    fake_anthropic.reply_text("the plan", when=for_role(tag, "planner"))
    for role in ("a", "b", "c"):
        fake_anthropic.reply_text("never", when=for_role(tag, role), hold=never)
    workflow = await create_workflow(api, fan_out(tag))
    run_id = (await trigger(api, workflow["id"], "Go."))["id"]
    try:
        async def fanned_out() -> bool:
            return all(fake_anthropic.count(for_role(tag, r)) for r in ("a", "b", "c"))

        await eventually(fanned_out, within=30)
        response = await api.post(f"/v1/runs/{run_id}/cancel")
        assert response.status_code == 202, response.text
        cancelled = await wait_for_status(api, run_id, "cancelled")
    finally:
        never.set()
    steps = {s["role"]: s for s in cancelled["steps"]}
    assert steps["planner"]["output"] == "the plan"
    assert all(steps[r]["error"] == "cancelled" and steps[r]["finished_at"]
               for r in ("a", "b", "c"))
    assert "editor" not in steps
    assert fake_anthropic.count(for_role(tag, "editor")) == 0


async def test_retry_of_a_failed_fan_out_pays_for_nothing_twice(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    c_fails, b_answers = threading.Event(), threading.Event()
    a, b, c = (for_role(tag, r) for r in ("a", "b", "c"))
    fake_anthropic.reply_text("the plan", tokens_in=1, tokens_out=1,
                              when=for_role(tag, "planner"))
    # a completes; b is mid tool loop (one completed call, the next in flight) when c
    # fails; the join never starts.
    fake_anthropic.reply_text("a done", tokens_in=2, tokens_out=2, when=a)
    fake_anthropic.reply_tool_use("http_request", {"url": "ftp://nowhere"}, tokens_in=3,
                                  tokens_out=3, when=b)
    fake_anthropic.reply_text("b lost", when=b, hold=b_answers)
    fake_anthropic.reply_error(400, message="c broke", when=c, hold=c_fails)
    workflow = await create_workflow(api, [
        agent("planner", tag), agent("a", tag, ["planner"]),
        agent("b", tag, ["planner"], tools=["http_request"]), agent("c", tag, ["planner"]),
        agent("editor", tag, ["a", "b", "c"])])
    run_id = (await trigger(api, workflow["id"], "Go."))["id"]

    async def b_on_its_second_call() -> bool:
        return fake_anthropic.count(b) == 2 and fake_anthropic.count(c) == 1

    await eventually(b_on_its_second_call, within=30)
    c_fails.set()
    try:
        failed = await wait_for_status(api, run_id, "failed", "completed")
    finally:
        b_answers.set()  # to a call the run no longer waits for
    assert failed["error"].startswith("Step 4 (c) failed: The model API rejected")
    steps = {s["role"]: s for s in failed["steps"]}
    assert (steps["b"]["error"], steps["b"]["tokens_in"]) == ("cancelled", 3)

    fake_anthropic.reply_text("b done", tokens_in=4, tokens_out=4, when=b)
    fake_anthropic.reply_text("c done", tokens_in=5, tokens_out=5, when=c)
    fake_anthropic.reply_text("the brief", tokens_in=6, tokens_out=6,
                              when=for_role(tag, "editor"))
    counts = {r: fake_anthropic.count(for_role(tag, r)) for r in ("planner", "a", "b", "c")}
    response = await api.post(f"/v1/runs/{run_id}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] in ("running", "completed")
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "the brief"
    # Nothing that completed was called again: planner and a not at all; b goes on after
    # its completed first call (one more call, with the first call's tool result in it).
    assert fake_anthropic.count(for_role(tag, "planner")) == counts["planner"] == 1
    assert fake_anthropic.count(a) == counts["a"] == 1
    b_calls = fake_anthropic.requests_matching(b)
    assert len(b_calls) == counts["b"] + 1 == 3
    # b's retried call carries its first round (the model's tool call and its result).
    assert [m["role"] for m in b_calls[-1].messages] == ["user", "assistant", "user"]
    assert b_calls[-1].messages[1:] == b_calls[1].messages[1:]
    assert fake_anthropic.count(c) == counts["c"] + 1
    kept = {s["role"]: s for s in done["steps"]}
    assert kept["planner"] == steps["planner"] and kept["a"] == steps["a"]
    assert all(s["error"] is None for s in done["steps"])
    # The run is listed once, as it is now.
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "completed")]
    # Tokens: every completed call once (b's lost call was never completed).
    assert done["tokens_in"] == 1 + 2 + 3 + 4 + 5 + 6


async def test_a_retried_create_of_a_graph_returns_the_same_workflow(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    body = {"name": "graph", "crew": fan_out(unique_tag()), "max_parallel": 2}
    headers = {"Idempotency-Key": f"graph-{unique_tag()}"}
    first = await api.post("/v1/workflows", json=body, headers=headers)
    again = await api.post("/v1/workflows", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json()["data"]["id"] == again.json()["data"]["id"]
    other = await api.post("/v1/workflows", json={**body, "max_parallel": 3}, headers=headers)
    assert other.status_code == 409


async def test_a_run_terminated_while_two_branches_wait_shows_no_open_pause(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic, temporal: Client
) -> None:
    tag = unique_tag()
    for role in ("p", "q"):
        fake_anthropic.reply_tool_use("ask_human", {"question": f"{role}?"},
                                      when=for_role(tag, role))
    workflow = await create_workflow(
        api, [agent("p", tag, []), agent("q", tag, [])],
        human_in_the_loop={"allow_input_requests": True})
    run_id = (await trigger(api, workflow["id"], "Ask."))["id"]

    async def both_paused() -> bool:
        return len((await get_run(api, run_id))["pauses"]) == 2

    await eventually(both_paused, within=30)
    await temporal.get_workflow_handle(run_id).terminate(reason="stuck")
    ended = await wait_for_status(api, run_id, "failed")
    assert (ended["pending"], ended["pauses"]) == (None, [])
    assert ended["error"] == "Terminated in Temporal: stuck"
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert listed[0]["pauses"] == []
