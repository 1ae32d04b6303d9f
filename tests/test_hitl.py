"""Human in the loop and tools, checked against ../shared/spec/runs-api.md ("Respond to a
paused run") and PRODUCT.md ("Human in the loop", "Tools").

Most tests script the model with the fake Anthropic server (replies routed to one agent of
one test by `for_role`), so every tool call, pause and answer is exact; the last tests run
the quick start's loop on the offline model end to end.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from core.ids import new_id
from core.settings import Secret, Settings
from tests.conftest import crew, eventually, for_role, unique_tag
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    RecordedRequest,
    Reply,
    content_text,
    strip_cache_control,
)
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.tool_server import ToolServer
from tests.helpers import api_client, create_workflow, get_run, trigger, wait_for_status
from worker import build_worker

EMAIL = {"to": "bob@example.com", "subject": "Launch day", "body": "We launch on Monday."}
MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@loopllama>$")
PAUSE_ID = re.compile(r"^ckpause[0-9a-z]{21}$")
CRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"contact": {"type": "string"}, "note": {"type": "string"}},
    "required": ["contact"],
    "additionalProperties": False,
}

Predicate = Callable[[dict[str, Any]], bool]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def tool_settings(settings: Settings, smtp: FakeSmtp) -> Settings:
    """The test settings plus real SMTP (the fake) and 127.0.0.1 on the allow-list."""
    return replace(
        settings, smtp_url=Secret(smtp.url), smtp_from="crew@example.com",
        http_allowlist=("127.0.0.1",),
    )


@pytest.fixture
async def tool_worker(temporal: Client, tool_settings: Settings) -> AsyncIterator[Worker]:
    async with build_worker(temporal, tool_settings) as running:
        yield running


@pytest.fixture
async def api(temporal: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with 127.0.0.1 allow-listed: custom tools on the tool server are declared
    under the webhooks' create-time address policy (each worker keeps its own list), and
    "localhost", so a test can declare a tool the worker then refuses when called."""
    local = replace(settings, http_allowlist=("127.0.0.1", "localhost"))
    async with api_client(local, temporal) as client:
        yield client


# ---------------------------------------------------------------------------- helpers


def crm_tool(url: str) -> dict[str, Any]:
    """A custom tool declaration, as a user wires a CRM."""
    return {"name": "crm_update", "description": "Update a CRM contact.",
            "input_schema": CRM_SCHEMA, "url": url}


def for_input(tag: str, role: str, text: str) -> Predicate:
    """Requests from one agent of one test's crew in the run triggered with `text`."""
    by_role = for_role(tag, role)

    def matches(body: dict[str, Any]) -> bool:
        messages = body.get("messages") or []
        return (by_role(body) and bool(messages)
                and content_text(messages[0].get("content")) == text)

    return matches


def tool_uses(*calls: tuple[str, dict[str, Any]], when: Predicate) -> Reply:
    """One model reply calling several tools at once."""
    return Reply(
        content=[
            {"type": "tool_use", "id": f"toolu_{unique_tag()}{n}", "name": name, "input": args}
            for n, (name, args) in enumerate(calls)
        ],
        stop_reason="tool_use",
        when=when,
    )


async def respond(api: httpx.AsyncClient, run_id: str, body: Any) -> httpx.Response:
    return await api.post(f"/v1/runs/{run_id}/respond", json=body)


async def respond_ok(api: httpx.AsyncClient, run_id: str, body: dict[str, Any]) -> None:
    response = await respond(api, run_id, body)
    assert response.status_code == 202, response.text
    assert response.json() == {"data": {"id": run_id, "status": "running"}}


def answers(fake: FakeAnthropic, tool_use_id: str) -> list[dict[str, Any]]:
    """The tool_result blocks for `tool_use_id` in requests whose newest message holds them.

    One entry per model call made after the tool ran, so a run that resumed once for a
    call yields exactly one.
    """
    found: list[dict[str, Any]] = []
    for request in fake.requests:
        messages = request.messages
        if not messages or messages[-1].get("role") != "user":
            continue
        content = messages[-1].get("content")
        if not isinstance(content, list):
            continue
        found.extend(
            block for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
            and block.get("tool_use_id") == tool_use_id
        )
    return found


def only_answer(fake: FakeAnthropic, tool_use_id: str | None) -> dict[str, Any]:
    assert tool_use_id is not None
    found = answers(fake, tool_use_id)
    assert len(found) == 1, found
    return found[0]


def offered(request: RecordedRequest) -> list[str]:
    """Names of the tools a model call offered."""
    return [tool["name"] for tool in (request.body or {}).get("tools", [])]


async def expect_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert error["message"]
    return str(error["message"])


# ------------------------------------------------------------------ questions and answers


async def test_question_then_answer_goes_back_as_the_tool_result(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    ask = fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"}, when=writer)
    fake_anthropic.reply_text("A friendly launch note.", when=writer)
    workflow = await create_workflow(
        api, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True}
    )
    run_id = (await trigger(api, workflow["id"], "Write the launch note."))["id"]

    paused = await wait_for_status(api, run_id, "waiting_input")
    assert paused["pending"] == {"kind": "input", "prompt": "Which tone?",
                                 "id": paused["pending"]["id"]}
    assert PAUSE_ID.match(paused["pending"]["id"])
    assert paused["output"] is None and paused["finished_at"] is None
    assert [(s["role"], s["output"]) for s in paused["steps"]] == [("writer", None)]
    # Reads are stable while paused, and the list shows the pause too.
    assert (await get_run(api, run_id))["pending"] == paused["pending"]
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [(r["status"], r["pending"]) for r in listed] == [("waiting_input", paused["pending"])]
    (first_call,) = fake_anthropic.requests_matching(writer)
    assert offered(first_call) == ["ask_human"]

    await respond_ok(api, run_id, {"action": "input", "input": "friendly"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["pending"] is None and done["error"] is None
    assert done["output"] == "A friendly launch note."

    first_call, second_call = fake_anthropic.requests_matching(writer)
    messages = second_call.messages
    assert len(messages) == 3
    assert content_text(messages[0]["content"]) == "Write the launch note."
    assert messages[1]["role"] == "assistant"
    (use,) = [b for b in messages[1]["content"] if b["type"] == "tool_use"]
    assert (use["id"], use["name"], use["input"]) == (
        ask.tool_use_id, "ask_human", {"question": "Which tone?"}
    )
    assert strip_cache_control(messages[2]) == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": ask.tool_use_id,
                     "content": "friendly", "is_error": False}],
    }


# ------------------------------------------------------------------------------ approvals


async def approval_run(
    api: httpx.AsyncClient, fake: FakeAnthropic, *emails: dict[str, str]
) -> tuple[str, list[Reply], Predicate]:
    """A run of a one-agent crew that sends `emails` (each gated), then says "Done."."""
    tag = unique_tag()
    mailer = for_role(tag, "mailer")
    calls = [fake.reply_tool_use("send_email", email, when=mailer) for email in emails]
    fake.reply_text("Done.", when=mailer)
    workflow = await create_workflow(
        api, crew("mailer", tag=tag, tools=["send_email"]),
        human_in_the_loop={"approval_required_tools": ["send_email"]},
    )
    run = await trigger(api, workflow["id"], "Tell Bob about the launch.")
    return str(run["id"]), calls, mailer


async def test_approve_sends_exactly_the_email_the_agent_wrote(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp
) -> None:
    run_id, (call,), mailer = await approval_run(api, fake_anthropic, EMAIL)

    paused = await wait_for_status(api, run_id, "waiting_input")
    pending = paused["pending"]
    assert set(pending) == {"kind", "prompt", "tool", "tool_input", "id"}
    assert (pending["kind"], pending["tool"], pending["tool_input"]) == (
        "approval", "send_email", EMAIL
    )
    assert "bob@example.com" in pending["prompt"] and "\n" not in pending["prompt"]
    assert smtp.messages() == []  # nothing is sent before the go-ahead

    await respond_ok(api, run_id, {"action": "approve"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["pending"] is None and done["output"] == "Done."

    (mail,) = smtp.messages()
    assert mail.recipients == ["bob@example.com"]
    assert mail.sender == "crew@example.com"
    assert mail.message["To"] == "bob@example.com"
    assert mail.message["Subject"] == "Launch day"
    assert mail.body.replace("\r\n", "\n").rstrip("\n") == "We launch on Monday."
    assert MESSAGE_ID.match(mail.message_id), mail.message_id
    # Long headers are folded on the wire; unfolded, it is the call's idempotency key.
    key = str(mail.message["X-LoopLlama-Idempotency-Key"]).replace("\r\n", "").strip()
    assert key == f"{run_id}:0:0:0"  # step 1, its first tool round, the first call

    result = only_answer(fake_anthropic, call.tool_use_id)
    assert result["is_error"] is False
    assert "sent" in result["content"].lower() and "bob@example.com" in result["content"]
    assert len(fake_anthropic.requests_matching(mailer)) == 2


async def test_reject_skips_the_tool_and_tells_the_agent_why(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp
) -> None:
    second = {**EMAIL, "subject": "Second try"}
    run_id, (call, retry), _ = await approval_run(api, fake_anthropic, EMAIL, second)

    await wait_for_status(api, run_id, "waiting_input")
    await respond_ok(
        api, run_id, {"action": "reject", "reason": "Do not email external addresses."}
    )
    paused = await wait_for_status(api, run_id, "waiting_input")
    assert paused["pending"]["tool_input"] == second
    await respond_ok(api, run_id, {"action": "reject"})  # the reason is optional
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]

    assert smtp.messages() == []
    first = only_answer(fake_anthropic, call.tool_use_id)
    assert first["is_error"] is True
    assert "Do not email external addresses." in first["content"]
    assert "declined" in first["content"] and "not run" in first["content"]
    without_reason = only_answer(fake_anthropic, retry.tool_use_id)
    assert without_reason["is_error"] is True
    assert "declined" in without_reason["content"]


async def test_several_pauses_across_two_steps(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp
) -> None:
    tag = unique_tag()
    planner, mailer = for_role(tag, "planner"), for_role(tag, "mailer")
    plan_q = fake_anthropic.reply_tool_use("ask_human", {"question": "Who is the audience?"},
                                           when=planner)
    fake_anthropic.reply_text("Plan: tell SMB owners.", when=planner)
    mail_q = fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"},
                                           when=mailer)
    mail = fake_anthropic.reply_tool_use("send_email", EMAIL, when=mailer)
    fake_anthropic.reply_text("Email sent.", when=mailer)
    workflow = await create_workflow(
        api,
        [*crew("planner", tag=tag), *crew("mailer", tag=tag, tools=["send_email"])],
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    run_id = (await trigger(api, workflow["id"], "Announce the launch."))["id"]

    # Pause 1, in step 1.
    paused = await wait_for_status(api, run_id, "waiting_input")
    first_pause = paused["pending"].pop("id")
    assert paused["pending"] == {"kind": "input", "prompt": "Who is the audience?"}
    assert [s["role"] for s in paused["steps"]] == ["planner"]
    await respond_ok(api, run_id, {"action": "input", "input": "SMB owners"})

    # Pause 2, a question in step 2.
    paused = await wait_for_status(api, run_id, "waiting_input")
    # Each pause has its own id.
    assert paused["pending"].pop("id") not in (None, first_pause)
    assert paused["pending"] == {"kind": "input", "prompt": "Which tone?"}
    planner_step, mailer_step = paused["steps"]
    assert planner_step["output"] == "Plan: tell SMB owners."
    assert mailer_step["role"] == "mailer" and mailer_step["output"] is None
    await respond_ok(api, run_id, {"action": "input", "input": "Warm"})

    # Pause 3, an approval in the same step.
    paused = await wait_for_status(api, run_id, "waiting_input")
    assert paused["pending"]["kind"] == "approval"
    assert paused["pending"]["tool_input"] == EMAIL
    assert len(paused["steps"]) == 2
    await respond_ok(api, run_id, {"action": "approve"})

    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "Email sent." and done["pending"] is None
    assert only_answer(fake_anthropic, plan_q.tool_use_id)["content"] == "SMB owners"
    assert only_answer(fake_anthropic, mail_q.tool_use_id)["content"] == "Warm"
    assert only_answer(fake_anthropic, mail.tool_use_id)["is_error"] is False
    assert len(smtp.messages()) == 1


# ---------------------------------------------------------------------------- refusals


async def test_respond_refusals_leave_the_paused_run_unchanged(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp
) -> None:
    tag = unique_tag()
    mailer = for_role(tag, "mailer")
    fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"}, when=mailer)
    fake_anthropic.reply_tool_use("send_email", EMAIL, when=mailer)
    fake_anthropic.reply_text("Done.", when=mailer)
    workflow = await create_workflow(
        api, crew("mailer", tag=tag, tools=["send_email"]),
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    run_id = (await trigger(api, workflow["id"], "Tell Bob."))["id"]
    paused = await wait_for_status(api, run_id, "waiting_input")
    url = f"/v1/runs/{run_id}/respond"

    async def unchanged() -> None:
        now = await get_run(api, run_id)
        assert (now["status"], now["pending"]) == ("waiting_input", paused["pending"])

    # An input pause.
    wrong_kind = [{"action": "approve"}, {"action": "reject", "reason": "no"}]
    bad_input = [
        {"action": "input"}, {"action": "input", "input": ""},
        {"action": "input", "input": "   \n\t "}, {"action": "input", "input": None},
    ]
    malformed: list[Any] = [
        {"action": "maybe", "input": "x"}, {"action": "INPUT", "input": "x"},
        {"input": "friendly"}, {}, {"action": "input", "input": "x", "extra": True},
        {"action": "input", "input": 5}, {"action": "input", "input": "x" * 16_001},
        [], ["input"], "input", None, 42,
    ]
    for body in [*wrong_kind, *bad_input, *malformed]:
        await expect_error(await respond(api, run_id, body), 400, "invalid_request_error")
        await unchanged()
    message = await expect_error(
        await respond(api, run_id, {"action": "approve"}), 400, "invalid_request_error"
    )
    assert '"input"' in message
    for raw in (b"not json", b"", b'{"action": "input", "input": "x"'):
        response = await api.post(url, content=raw, headers={"Content-Type": "application/json"})
        await expect_error(response, 400, "invalid_request_error")
        await unchanged()
    assert smtp.messages() == []
    await respond_ok(api, run_id, {"action": "input", "input": "friendly"})

    # An approval pause.
    paused = await wait_for_status(api, run_id, "waiting_input")
    assert paused["pending"]["kind"] == "approval"
    for body in [
        {"action": "input", "input": "yes"}, {"action": "input"},
        {"action": "approve", "extra": 1}, {"action": "ok"},
        {"action": "reject", "reason": 7},
    ]:
        await expect_error(await respond(api, run_id, body), 400, "invalid_request_error")
        await unchanged()
    assert smtp.messages() == []
    await respond_ok(api, run_id, {"action": "approve"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert len(smtp.messages()) == 1

    # Not paused (any more): 409, and nothing changes.
    for body in [{"action": "approve"}, {"action": "input", "input": "late"},
                 {"action": "reject"}]:
        message = await expect_error(await respond(api, run_id, body), 409, "conflict_error")
        assert "completed" in message
    assert await get_run(api, run_id) == done
    assert len(smtp.messages()) == 1


async def test_respond_to_a_running_run_is_409(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    release = threading.Event()
    fake_anthropic.reply_text("drafted", when=writer, hold=release)
    workflow = await create_workflow(
        api, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True}
    )
    run_id = (await trigger(api, workflow["id"], "Draft."))["id"]
    try:
        async def model_called() -> bool:
            return fake_anthropic.count(writer) == 1

        await eventually(model_called)
        running = await wait_for_status(api, run_id, "running")
        for body in [{"action": "input", "input": "x"}, {"action": "approve"},
                     {"action": "reject"}]:
            message = await expect_error(await respond(api, run_id, body), 409,
                                         "conflict_error")
            assert "running" in message
            now = await get_run(api, run_id)
            assert (now["status"], now["pending"]) == ("running", None)
    finally:
        release.set()
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert running["pending"] is None and done["output"] == "drafted"


async def test_respond_to_queued_unknown_and_unauthenticated(
    api: httpx.AsyncClient, anon_api: httpx.AsyncClient, temporal: Client
) -> None:
    # No worker: the run stays queued.
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    run_id = (await trigger(api, workflow["id"], "x"))["id"]
    try:
        for body in [{"action": "input", "input": "x"}, {"action": "approve"}]:
            message = await expect_error(await respond(api, run_id, body), 409,
                                         "conflict_error")
            assert "queued" in message
        assert (await get_run(api, run_id))["status"] == "queued"

        for unknown in (new_id("ckrun"), "ckrun000000000000000000000", "not-a-run",
                        workflow["id"], "ckrun" + "Z" * 21):
            response = await respond(api, unknown, {"action": "approve"})
            await expect_error(response, 404, "not_found_error")

        for client, headers in ((anon_api, {}), (api, {"Authorization": "Bearer wrong-key"})):
            for target in (run_id, "not-a-run"):
                bodies: list[Any] = [{"action": "approve"}, {"action": "maybe"}, []]
                for body in bodies:
                    response = await client.post(f"/v1/runs/{target}/respond",
                                                 json=body, headers=headers)
                    await expect_error(response, 401, "authentication_error")
        assert (await get_run(api, run_id))["status"] == "queued"
    finally:
        await temporal.get_workflow_handle(run_id).terminate("test cleanup")


async def test_unauthenticated_malformed_json_respond_is_401(
    anon_api: httpx.AsyncClient,
) -> None:
    # Valid JSON of the wrong shape already gets 401 (test above); bytes that are not JSON
    # at all must too: every /v1 endpoint requires the key before anything else.
    for raw in (b"not json", b'{"action": "input"'):
        response = await anon_api.post(
            "/v1/runs/not-a-run/respond", content=raw,
            headers={"Content-Type": "application/json"},
        )
        await expect_error(response, 401, "authentication_error")


# -------------------------------------------------------------------------------- races


async def test_concurrent_responds_exactly_one_wins(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp
) -> None:
    tag = unique_tag()
    workflow = await create_workflow(
        api, crew("racer", tag=tag, tools=["send_email"]),
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    # (kind, run input, tool_use reply, the two competing bodies)
    cases: list[tuple[str, str, Reply, tuple[dict[str, Any], dict[str, Any]]]] = []
    for n in range(16):
        kind = "input" if n < 10 else "approve" if n < 13 else "mixed"
        text = f"race {n}"
        when = for_input(tag, "racer", text)
        if kind == "input":
            call = fake_anthropic.reply_tool_use("ask_human", {"question": f"Q{n}?"}, when=when)
            bodies = ({"action": "input", "input": f"first {n}"},
                      {"action": "input", "input": f"second {n}"})
        else:
            email = {**EMAIL, "to": f"race{n}@example.com"}
            call = fake_anthropic.reply_tool_use("send_email", email, when=when)
            other = {"action": "reject", "reason": f"no {n}"} if kind == "mixed" else {
                "action": "approve"}
            bodies = ({"action": "approve"}, other)
        fake_anthropic.reply_text(f"done {n}", when=when)
        cases.append((kind, text, call, bodies))

    run_ids = [
        str(run["id"]) for run in await asyncio.gather(
            *(trigger(api, workflow["id"], text) for _, text, _, _ in cases)
        )
    ]
    await asyncio.gather(*(wait_for_status(api, r, "waiting_input") for r in run_ids))

    winners: list[dict[str, Any]] = []
    for run_id, (_, _, _, bodies) in zip(run_ids, cases, strict=True):
        responses = await asyncio.gather(*(respond(api, run_id, body) for body in bodies))
        statuses = [r.status_code for r in responses]
        assert sorted(statuses) == [202, 409], [r.text for r in responses]
        loser = responses[statuses.index(409)]
        assert loser.json()["error"]["type"] == "conflict_error"
        winner = statuses.index(202)
        assert responses[winner].json() == {"data": {"id": run_id, "status": "running"}}
        winners.append(bodies[winner])

    done = await asyncio.gather(
        *(wait_for_status(api, r, "completed", "failed") for r in run_ids)
    )
    mails = smtp.messages()
    for run, (kind, text, call, _), won in zip(done, cases, winners, strict=True):
        assert run["status"] == "completed", run["error"]
        # Resumed exactly once: one more model call, one tool_result for the call.
        assert fake_anthropic.count(for_input(tag, "racer", text)) == 2, text
        result = only_answer(fake_anthropic, call.tool_use_id)
        if kind == "input":
            assert result["content"] == won["input"]
            continue
        sent = [m for m in mails if m.recipients == [call.content[0]["input"]["to"]]]
        if won["action"] == "approve":
            assert len(sent) == 1, text
            assert result["is_error"] is False
        else:
            assert sent == [], text
            assert result["is_error"] is True and won["reason"] in result["content"]
    assert len(mails) == sum(1 for won in winners if won.get("action") == "approve")


# ----------------------------------------------------------------------------- timeout


async def test_unanswered_question_times_out_and_fails_the_step(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"}, when=writer)
    fake_anthropic.reply_text("never used", when=writer)
    workflow = await create_workflow(
        api, crew("writer", tag=tag),
        human_in_the_loop={"allow_input_requests": True, "input_timeout_seconds": 2},
    )
    run_id = (await trigger(api, workflow["id"], "Draft."))["id"]
    await wait_for_status(api, run_id, "waiting_input")
    failed = await wait_for_status(api, run_id, "failed", "completed", within=20)
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error.startswith("Step 1 (writer) failed: "), error
    assert "timed out" in error and "waiting for a human" in error
    assert failed["pending"] is None and failed["output"] is None
    (step,) = failed["steps"]
    assert step["error"] and "timed out" in step["error"] and step["output"] is None
    assert fake_anthropic.count(writer) == 1
    message = await expect_error(
        await respond(api, run_id, {"action": "input", "input": "too late"}), 409,
        "conflict_error",
    )
    assert "failed" in message


# ---------------------------------------------------------------------------- HTTP tools


async def test_http_tools_refuse_hosts_off_the_allowlist_and_private_addresses(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic,
    tool_server: ToolServer,
) -> None:
    # The plain worker has an empty allow-list.
    tag = unique_tag()
    fetcher = for_role(tag, "fetcher")
    calls = fake_anthropic.enqueue(tool_uses(
        ("http_request", {"method": "GET", "url": "http://example.com/"}),
        ("http_request", {"url": tool_server.url("/status")}),
        ("crm_update", {"contact": "bob"}),
        when=fetcher,
    ))
    fake_anthropic.reply_text("Could not reach them.", when=fetcher)
    workflow = await create_workflow(
        api, crew("fetcher", tag=tag, tools=["http_request", "crm_update"]),
        tools=[crm_tool(tool_server.url("/crm"))],
    )
    run_id = (await trigger(api, workflow["id"], "Fetch."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]

    example, local, crm = (only_answer(fake_anthropic, b["id"]) for b in calls.content)
    for result in (example, local, crm):
        assert result["is_error"] is True
        assert "refused" in result["content"]
    assert "LOOPLLAMA_HTTP_ALLOWLIST" in example["content"] and "example.com" in example["content"]
    assert "LOOPLLAMA_HTTP_ALLOWLIST" in local["content"]
    assert "non-public" in crm["content"] and "127.0.0.1" in crm["content"]
    assert tool_server.requests() == []


async def test_allowlisted_http_request_returns_status_and_body(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic,
    tool_server: ToolServer,
) -> None:
    # Allow-listed: 127.0.0.1. "localhost" is the same machine by another name: refused.
    tag = unique_tag()
    fetcher = for_role(tag, "fetcher")
    localhost_url = tool_server.url("/crm").replace("127.0.0.1", "localhost")
    calls = fake_anthropic.enqueue(tool_uses(
        ("http_request", {"method": "GET", "url": tool_server.url("/status")}),
        ("http_request", {"url": localhost_url}),
        ("crm_update", {"contact": "bob"}),
        when=fetcher,
    ))
    fake_anthropic.reply_text("Fetched.", when=fetcher)
    workflow = await create_workflow(
        api, crew("fetcher", tag=tag, tools=["http_request", "crm_update"]),
        tools=[crm_tool(localhost_url)],
    )
    run_id = (await trigger(api, workflow["id"], "Fetch."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]

    fetched, by_name, crm = (only_answer(fake_anthropic, b["id"]) for b in calls.content)
    assert fetched["is_error"] is False
    assert fetched["content"] == 'HTTP 200\n{"ok": true}'
    assert by_name["is_error"] is True and "LOOPLLAMA_HTTP_ALLOWLIST" in by_name["content"]
    assert crm["is_error"] is True and "non-public" in crm["content"]
    (request,) = tool_server.requests()
    assert (request.method, request.path) == ("GET", "/status")
    assert request.headers["idempotency-key"] == f"{run_id}:0:0:0"


# -------------------------------------------------------------------------- custom tools


async def test_custom_tool_gets_json_and_a_stable_idempotency_key(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic,
    tool_server: ToolServer,
) -> None:
    tag = unique_tag()
    workflow = await create_workflow(
        api, crew("crm", tag=tag, tools=["crm_update"]),
        tools=[crm_tool(tool_server.url("/crm"))],
    )
    update = {"contact": "bob", "note": "Interested in the launch."}

    async def run_once(text: str, *failures: int) -> tuple[dict[str, Any], str]:
        when = for_input(tag, "crm", text)
        # The same tool_use id in every run: the run id must still tell calls apart.
        call = fake_anthropic.reply_tool_use("crm_update", update, tool_use_id="toolu_same",
                                             when=when)
        fake_anthropic.reply_text("Updated.", when=when)
        tool_server.fail_next(*failures)
        run_id = str((await trigger(api, workflow["id"], text))["id"])
        done = await wait_for_status(api, run_id, "completed", "failed")
        assert done["status"] == "completed", done["error"]
        results = [
            block for r in fake_anthropic.requests_matching(when)
            for block in r.tool_results if block["tool_use_id"] == call.tool_use_id
        ]
        assert len(results) == 1, results
        return strip_cache_control(results[0]), run_id

    # A 500 is retried, with the same key.
    result, first_run = await run_once("first", 500)
    assert result == {"type": "tool_result", "tool_use_id": "toolu_same",
                      "content": '{"ok": true}', "is_error": False}
    attempts = tool_server.requests()
    assert len(attempts) == 2
    for attempt in attempts:
        assert (attempt.method, attempt.path, attempt.body) == ("POST", "/crm", update)
        assert attempt.headers["content-type"] == "application/json"
    keys = {attempt.headers["idempotency-key"] for attempt in attempts}
    assert keys == {f"{first_run}:0:0:0"}

    # Another run's call: another key.
    _, second_run = await run_once("second")
    latest = tool_server.requests()[2:]
    assert len(latest) == 1
    assert latest[0].headers["idempotency-key"] == f"{second_run}:0:0:0"
    assert latest[0].headers["idempotency-key"] not in keys

    # A 4xx goes back to the model as an error, not retried.
    result, _ = await run_once("third", 422)
    assert result["is_error"] is True
    assert "failing on purpose" in result["content"]
    assert len(tool_server.requests()) == 4


async def test_approved_custom_tool_runs_once(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic,
    tool_server: ToolServer,
) -> None:
    tag = unique_tag()
    when = for_role(tag, "crm")
    update = {"contact": "bob", "note": "VIP"}
    fake_anthropic.reply_tool_use("crm_update", update, when=when)
    fake_anthropic.reply_text("Updated.", when=when)
    workflow = await create_workflow(
        api, crew("crm", tag=tag, tools=["crm_update"]),
        tools=[crm_tool(tool_server.url("/crm"))],
        human_in_the_loop={"approval_required_tools": ["crm_update"]},
    )
    run_id = (await trigger(api, workflow["id"], "Mark Bob as VIP."))["id"]
    paused = await wait_for_status(api, run_id, "waiting_input")
    pending = paused["pending"]
    assert (pending["kind"], pending["tool"], pending["tool_input"]) == (
        "approval", "crm_update", update
    )
    assert "crm_update" in pending["prompt"] and "\n" not in pending["prompt"]
    assert tool_server.requests() == []
    await respond_ok(api, run_id, {"action": "approve"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    (request,) = tool_server.requests()
    assert request.body == update
    assert request.headers["idempotency-key"] == f"{run_id}:0:0:0"


# ---------------------------------------------------------------------- invalid tool use


async def test_invalid_and_unknown_tool_calls_run_nothing(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    tool_server: ToolServer,
) -> None:
    tag = unique_tag()
    agent = for_role(tag, "agent")
    calls = fake_anthropic.enqueue(tool_uses(
        ("send_email", {"subject": "Hi", "body": "No recipient."}),
        ("send_email", {**EMAIL, "to": "not-an-address"}),
        ("send_email", {**EMAIL, "cc": "eve@example.com"}),
        ("crm_update", {"contact": 5}),
        ("crm_update", {"note": "no contact"}),
        ("frobnicate", {}),
        ("ask_human", {"question": "Not offered: input requests are off."}),
        ("http_request", {"url": tool_server.url("/x")}),  # not this agent's tool
        when=agent,
    ))
    fake_anthropic.reply_text("Gave up.", when=agent)
    workflow = await create_workflow(
        api,
        [*crew("agent", tag=tag, tools=["send_email", "crm_update"]),
         *crew("other", tag=tag, tools=["http_request"])],
        tools=[crm_tool(tool_server.url("/crm"))],
        human_in_the_loop={"approval_required_tools": ["send_email", "crm_update"]},
    )
    run_id = (await trigger(api, workflow["id"], "Do things."))["id"]
    # Never paused: nothing valid was asked for, so nothing waited for approval.
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]

    results = [only_answer(fake_anthropic, block["id"]) for block in calls.content]
    for result in results:
        assert result["is_error"] is True, result
    for result in results[:5]:
        assert "Invalid input" in result["content"] and "Nothing was run" in result["content"]
    assert "to" in results[0]["content"]
    assert "crm_update" in results[3]["content"]
    for result, name in zip(results[5:], ("frobnicate", "ask_human", "http_request"),
                            strict=True):
        assert "no tool named" in result["content"] and name in result["content"]
    assert smtp.messages() == []
    assert tool_server.requests() == []
    assert fake_anthropic.count(agent) == 2


async def test_email_subject_with_a_line_break_is_invalid_input(
    api: httpx.AsyncClient, tool_worker: Worker, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    temporal: Client,
) -> None:
    run_id, (call,), _ = await approval_run(
        api, fake_anthropic, {**EMAIL, "subject": "Launch\nBcc: eve@example.com"}
    )
    try:
        run = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
        assert run["status"] == "completed", run["pending"]
        result = only_answer(fake_anthropic, call.tool_use_id)
        assert result["is_error"] is True and "Invalid input" in result["content"]
        assert smtp.messages() == []
    finally:
        if (await get_run(api, run_id))["status"] == "waiting_input":
            await temporal.get_workflow_handle(run_id).terminate("test cleanup")


async def test_too_many_tool_rounds_fail_the_step(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    looper = for_role(tag, "looper")
    for _ in range(3):
        fake_anthropic.reply_tool_use("frobnicate", {}, when=looper)
    fake_anthropic.reply_text("unreachable", when=looper)
    workflow = await create_workflow(api, crew("looper", tag=tag, max_tool_rounds=2))
    run_id = (await trigger(api, workflow["id"], "Loop."))["id"]
    failed = await wait_for_status(api, run_id, "failed", "completed")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("Step 1 (looper) failed: "), failed["error"]
    assert "max_tool_rounds" in failed["error"]
    assert fake_anthropic.count(looper) == 3  # two rounds of tools, then the third ask


# ---------------------------------------------------------------------- without a worker


async def test_paused_run_is_readable_without_a_worker_and_resumes_later(
    api: httpx.AsyncClient, temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    ask = fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"}, when=writer)
    fake_anthropic.reply_text("Done warmly.", when=writer)
    workflow = await create_workflow(
        api, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True}
    )
    async with build_worker(temporal, settings):
        run_id = (await trigger(api, workflow["id"], "Draft."))["id"]
        paused = await wait_for_status(api, run_id, "waiting_input")
    for _ in range(3):
        seen = await get_run(api, run_id)
        assert seen == paused
    listed = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
    assert [(r["status"], r["pending"]) for r in listed] == [("waiting_input", paused["pending"])]

    async with build_worker(temporal, settings):
        await respond_ok(api, run_id, {"action": "input", "input": "warm"})
        done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "Done warmly."
    assert only_answer(fake_anthropic, ask.tool_use_id)["content"] == "warm"


async def test_answer_sent_while_no_worker_runs_is_503_then_applies_once(
    api: httpx.AsyncClient, temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    ask = fake_anthropic.reply_tool_use("ask_human", {"question": "Which tone?"}, when=writer)
    fake_anthropic.reply_text("Done.", when=writer)
    workflow = await create_workflow(
        api, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True}
    )
    async with build_worker(temporal, settings):
        run_id = (await trigger(api, workflow["id"], "Draft."))["id"]
        paused = await wait_for_status(api, run_id, "waiting_input")
    # Nobody can confirm the answer: 503 (after the update timeout), nothing changed yet.
    response = await respond(api, run_id, {"action": "input", "input": "first"})
    await expect_error(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "1"
    assert await get_run(api, run_id) == paused
    async with build_worker(temporal, settings):
        done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    # As the 503 says, the answer already sent applied when a worker came; a retry is 409.
    assert only_answer(fake_anthropic, ask.tool_use_id)["content"] == "first"
    retry = await respond(api, run_id, {"action": "input", "input": "second"})
    await expect_error(retry, 409, "conflict_error")


# ----------------------------------------------------------------- the quick start, offline


async def test_quick_start_offline_approval_loop(
    api: httpx.AsyncClient, tool_worker: Worker, smtp: FakeSmtp
) -> None:
    agent = {"role": "assistant", "model": "loopllama-offline", "tools": ["send_email"]}
    workflow = await create_workflow(
        api, [agent], human_in_the_loop={"approval_required_tools": ["send_email"]}
    )
    run_id = (await trigger(api, workflow["id"], "Email bob@example.com the launch brief."))["id"]
    paused = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    assert paused["status"] == "waiting_input", paused
    pending = paused["pending"]
    assert (pending["kind"], pending["tool"]) == ("approval", "send_email")
    assert pending["tool_input"]["to"] == "bob@example.com"
    assert "bob@example.com" in pending["prompt"]
    assert smtp.messages() == []
    await respond_ok(api, run_id, {"action": "approve"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    (mail,) = smtp.messages()
    assert mail.recipients == ["bob@example.com"]
    assert mail.message["Subject"] == pending["tool_input"]["subject"]
    assert "Email sent to bob@example.com" in done["output"]


async def test_quick_start_offline_question_then_approval(
    api: httpx.AsyncClient, tool_worker: Worker, smtp: FakeSmtp
) -> None:
    agent = {"role": "assistant", "model": "loopllama-offline", "tools": ["send_email"]}
    workflow = await create_workflow(
        api, [agent],
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )
    text = "Ask me about tone, then email bob@example.com the brief."
    run_id = (await trigger(api, workflow["id"], text))["id"]
    first = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    assert first["status"] == "waiting_input", first
    assert set(first["pending"]) == {"kind", "prompt", "id"}
    assert first["pending"]["kind"] == "input" and first["pending"]["prompt"]
    await respond_ok(api, run_id, {"action": "input", "input": "Warm and brief."})

    second = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    assert second["status"] == "waiting_input", second
    assert second["pending"]["kind"] == "approval"
    assert second["pending"]["tool_input"]["to"] == "bob@example.com"
    assert smtp.messages() == []
    await respond_ok(api, run_id, {"action": "approve"})
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert [m.recipients for m in smtp.messages()] == [["bob@example.com"]]
    assert "Warm and brief." in done["output"]
    assert "Email sent to bob@example.com" in done["output"]
