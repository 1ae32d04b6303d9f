"""The Python SDK (`loopllama`), sync and async, against the real API and dev server.

- Async client: `AsyncLoopLlama(transport=httpx.ASGITransport(app))` on the app the
  `api` fixture builds (`create_app(settings, temporal)`), in process.
- Sync client: the real app served by uvicorn on 127.0.0.1 in a background thread (its
  own event loop and its own Temporal connection, as in a deployment). The sync calls
  run in `asyncio.to_thread`, so the session loop keeps running the test's worker.
- Retries, HTTP errors the API never produces (429, 500, dropped connections) and the
  poll loop's edge cases use a real HTTP stub on 127.0.0.1 that answers from a script.
- The human-in-the-loop tests through the real server skip themselves until the
  respond endpoint exists, and run once it does.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import loopllama
import pydantic
import pytest
from loopllama import (
    Agent,
    AsyncLoopLlama,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    HumanInTheLoop,
    LoopLlama,
    LoopLlamaError,
    NotFoundError,
    PollTimeoutError,
    RequestTooLargeError,
    Run,
    ServiceUnavailableError,
)
from temporalio.client import Client

from api.app import create_app
from api.body_limit import MAX_BODY_BYTES
from core.settings import Secret, Settings
from tests.conftest import API_KEY, crew, eventually, free_port
from tests.helpers import uvicorn_in_thread
from worker import build_worker

OFFLINE = "loopllama-offline"
FAST = 0.1  # poll interval for tests (the SDK allows < 1 s when asked explicitly)


def _respond_route_present() -> bool:
    # From the OpenAPI schema: with FastAPI >= 0.16x, `app.routes` holds included
    # routers as opaque entries rather than their flattened routes.
    paths = create_app(Settings(temporal_address="127.0.0.1:1")).openapi()["paths"]
    pattern = re.compile(r"/v1/runs/\{[^/{}]+\}/respond")
    return any(pattern.fullmatch(path) and "post" in ops for path, ops in paths.items())


needs_respond = pytest.mark.skipif(
    not _respond_route_present(), reason="respond endpoint not built yet"
)

HITL = {"allow_input_requests": True, "approval_required_tools": ["send_email"]}
HITL_INPUT = "ask me about tone, then email bob@example.com the brief"


def hitl_crew() -> list[dict[str, Any]]:
    """One offline agent that asks a question, then wants to send an email."""
    return crew("assistant", model=OFFLINE, tools=["send_email"])


# --- Fixtures and helpers: the real API -----------------------------------------------


@pytest.fixture
async def sdk(temporal: Client, settings: Settings) -> AsyncIterator[AsyncLoopLlama]:
    """The async SDK on the API in process (the app the `api` fixture builds)."""
    app = create_app(settings, temporal)
    async with AsyncLoopLlama(
        API_KEY, "http://testserver", transport=httpx.ASGITransport(app=app)
    ) as client:
        yield client




async def test_async_workflows_crud_pause_and_resume(sdk: AsyncLoopLlama, worker: Any) -> None:
    created = await sdk.workflows.create(
        name="sdk crew",
        description="made by the SDK",
        crew=[Agent(role="planner", model=OFFLINE), {"role": "writer", "model": OFFLINE}],
        human_in_the_loop=HumanInTheLoop(input_timeout_seconds=600),
    )
    assert created.id.startswith("ckva") and created.status == "active"
    assert [a.role for a in created.crew] == ["planner", "writer"]
    assert created.crew[0].instructions == "" and created.crew[0].max_tokens == 1024
    assert created.human_in_the_loop.input_timeout_seconds == 600
    assert created.created_at.utcoffset() == timedelta(0)

    from_dict = await sdk.workflows.create(
        {"name": "from a dict", "crew": crew("solo", model=OFFLINE)}
    )
    assert from_dict.name == "from a dict"

    assert await sdk.workflows.get(created.id) == created
    listed = [w.id for w in await sdk.workflows.list()]
    assert listed.index(from_dict.id) < listed.index(created.id)  # newest first

    updated = await sdk.workflows.update(created.id, name="renamed", crew=created.crew[:1])
    assert (updated.name, [a.role for a in updated.crew]) == ("renamed", ["planner"])
    assert updated.description == "made by the SDK"

    paused = await sdk.workflows.pause(created.id)
    assert paused.status == "paused" and paused.is_paused
    with pytest.raises(ConflictError) as conflict:
        await sdk.runs.trigger(created.id, "x")
    assert (conflict.value.status, conflict.value.type) == (409, "conflict_error")
    assert "resume" in conflict.value.message and "resume" in str(conflict.value)
    assert (await sdk.workflows.resume(created.id)).status == "active"
    await sdk.runs.trigger(created.id, "x")

    deleted = await sdk.workflows.delete(from_dict.id)
    assert (deleted.id, deleted.deleted) == (from_dict.id, True)
    with pytest.raises(NotFoundError):
        await sdk.workflows.get(from_dict.id)


async def test_async_trigger_list_get_and_poll_to_completion(
    sdk: AsyncLoopLlama, worker: Any
) -> None:
    workflow = await sdk.workflows.create(name="two", crew=crew("planner", "writer", model=OFFLINE))
    queued = await sdk.runs.trigger(workflow.id, "Draft a brief.")
    assert (queued.status, queued.workflow_id, queued.input) == ("queued", workflow.id,
                                                                 "Draft a brief.")
    assert queued.steps == [] and queued.pending is None and queued.output is None

    run = await sdk.runs.poll(queued.id, interval=FAST, timeout=30)
    assert run.status == "completed" and run.is_terminal, run.error
    assert [s.role for s in run.steps] == ["planner", "writer"]
    assert run.output == run.steps[-1].output and run.output
    assert run.tokens_in == sum(s.tokens_in for s in run.steps) > 0
    assert run.started_at is not None and run.finished_at is not None
    assert run.created_at <= run.started_at <= run.finished_at

    assert await sdk.runs.get(queued) == run  # a Run is accepted where an id is
    second = await sdk.runs.trigger_and_poll(workflow.id, "Again.", interval=FAST, timeout=30)
    assert second.status == "completed"

    async def both_listed() -> list[Run] | None:
        runs = await sdk.runs.list(workflow.id)
        return runs if all(r.status == "completed" for r in runs) and len(runs) == 2 else None

    listed = await eventually(both_listed)
    assert [r.id for r in listed] == [second.id, run.id]
    assert all(r.steps == [] for r in listed)


async def test_async_errors_the_server_produces(
    sdk: AsyncLoopLlama, temporal: Client, settings: Settings
) -> None:
    with pytest.raises(BadRequestError) as bad:
        await sdk.workflows.create(name="x", crew=[])
    assert bad.value.type == "invalid_request_error" and "crew" in bad.value.message
    assert bad.value.body["error"]["message"] == bad.value.message

    workflow = await sdk.workflows.create(name="x", crew=crew("solo", model=OFFLINE))
    with pytest.raises(BadRequestError, match="input"):
        await sdk.runs.trigger(workflow.id, "")
    with pytest.raises(LoopLlamaError, match="at least one"):
        await sdk.workflows.update(workflow.id)

    with pytest.raises(NotFoundError) as missing:
        await sdk.runs.get("ckrun000000000000000000000")
    assert missing.value.type == "not_found_error"
    with pytest.raises(NotFoundError):
        await sdk.workflows.get("ckva000000000000000000000")
    with pytest.raises(NotFoundError):
        await sdk.runs.list("ckva000000000000000000000")

    with pytest.raises(RequestTooLargeError) as too_large:
        await sdk.workflows.create(name="x" * (MAX_BODY_BYTES + 10), crew=[])
    assert too_large.value.type == "request_too_large"

    app = create_app(settings, temporal)
    async with AsyncLoopLlama(
        "not-the-key", "http://testserver", transport=httpx.ASGITransport(app=app)
    ) as wrong:
        with pytest.raises(AuthenticationError) as unauthorized:
            await wrong.workflows.list()
    assert unauthorized.value.status == 401 and "API key" in unauthorized.value.message


async def test_async_503_when_temporal_is_down(settings: Settings) -> None:
    down = replace(settings, temporal_address=f"127.0.0.1:{free_port()}")
    app = create_app(down)
    async with app.router.lifespan_context(app), AsyncLoopLlama(
        API_KEY, "http://t", transport=httpx.ASGITransport(app=app), max_retries=0
    ) as client:
        with pytest.raises(ServiceUnavailableError) as unavailable:
            await client.workflows.list()
    assert unavailable.value.type == "service_unavailable"
    assert "Temporal" in unavailable.value.message


async def test_async_poll_timeout_carries_the_last_run(sdk: AsyncLoopLlama) -> None:
    # No worker polls this test's task queue, so the run stays queued.
    workflow = await sdk.workflows.create(name="x", crew=crew("solo", model=OFFLINE))
    queued = await sdk.runs.trigger(workflow.id, "x")
    started = time.monotonic()
    with pytest.raises(PollTimeoutError) as timed_out:
        await sdk.runs.poll(queued.id, interval=0.05, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert (timed_out.value.run.id, timed_out.value.run.status) == (queued.id, "queued")
    assert timed_out.value.timeout == 0.3 and queued.id in str(timed_out.value)


# --- The sync client against the real API on uvicorn -----------------------------------


def sync_scenario(url: str) -> None:
    """Every method of the sync client, and the errors the server produces."""
    with LoopLlama(API_KEY, url + "/v1") as client:
        workflow = client.workflows.create(
            {"name": "sync crew", "crew": crew("planner", model=OFFLINE)},
            crew=[Agent(role="planner", model=OFFLINE), Agent(role="writer", model=OFFLINE)],
        )
        assert [a.role for a in workflow.crew] == ["planner", "writer"]
        assert client.workflows.get(workflow.id) == workflow
        assert workflow.id in [w.id for w in client.workflows.list()]
        assert client.workflows.update(workflow.id, description="d").description == "d"

        assert client.workflows.pause(workflow.id).is_paused
        try:
            client.runs.trigger(workflow.id, "x")
            raise AssertionError("a paused workflow accepted a run")
        except ConflictError as err:
            assert "resume" in err.message
        assert client.workflows.resume(workflow.id).status == "active"

        run = client.runs.trigger_and_poll(workflow.id, "Draft a brief.", interval=FAST,
                                           timeout=30)
        assert run.status == "completed" and len(run.steps) == 2, run.error
        assert client.runs.get(run.id).output == run.output
        queued = client.runs.trigger(workflow.id, "Again.")
        assert client.runs.poll(queued, interval=FAST, timeout=30).status == "completed"
        assert {r.id for r in client.runs.list(workflow.id)} == {run.id, queued.id}

        for call, expected in (
            (lambda: client.workflows.create(name="x", crew=[]), BadRequestError),
            (lambda: client.runs.get("ckrun000000000000000000000"), NotFoundError),
            (lambda: client.runs.trigger(workflow.id, "x" * 16_001), BadRequestError),
        ):
            try:
                call()
                raise AssertionError(f"expected {expected.__name__}")
            except expected:
                pass
        deleted = client.workflows.delete(workflow.id)
        assert deleted.deleted and client.runs.get(run.id).status == "completed"

    with LoopLlama("not-the-key", url) as wrong:
        try:
            wrong.workflows.list()
            raise AssertionError("a wrong key was accepted")
        except AuthenticationError as err:
            assert err.status == 401


async def test_sync_client_against_uvicorn(settings: Settings, worker: Any) -> None:
    async with uvicorn_in_thread(settings) as url:
        await asyncio.to_thread(sync_scenario, url)


@needs_respond
async def test_async_poll_answers_two_real_pauses(sdk: AsyncLoopLlama, worker: Any) -> None:
    workflow = await sdk.workflows.create(name="hitl", crew=hitl_crew(), human_in_the_loop=HITL)
    seen: list[loopllama.Pending] = []

    async def decide(run: Run) -> str | loopllama.Decision:
        assert run.is_waiting and run.pending is not None
        seen.append(run.pending)
        if run.pending.kind == "input":
            return "Use a friendly tone."
        return loopllama.reject("Do not email external addresses.")

    run = await sdk.runs.trigger_and_poll(workflow.id, HITL_INPUT, interval=FAST, timeout=30,
                                          on_waiting_input=decide)
    assert run.status == "completed", run.error
    assert sorted(p.kind for p in seen) == ["approval", "input"]
    (approval,) = [p for p in seen if p.kind == "approval"]
    assert approval.tool == "send_email"
    assert approval.tool_input is not None and approval.tool_input["to"] == "bob@example.com"
    assert run.output is not None and "friendly" in run.output.lower()


@needs_respond
async def test_async_paused_run_answered_by_hand(sdk: AsyncLoopLlama, worker: Any) -> None:
    workflow = await sdk.workflows.create(name="hitl", crew=hitl_crew(), human_in_the_loop=HITL)
    run = await sdk.runs.trigger(workflow.id, HITL_INPUT)
    answered: list[str] = []
    while True:
        run = await sdk.runs.poll(run.id, interval=FAST, timeout=30)
        if run.is_terminal:
            break
        assert run.is_waiting and run.pending is not None
        answered.append(run.pending.kind)
        if run.pending.kind == "input":
            with pytest.raises(BadRequestError):
                await sdk.runs.approve(run)  # wrong action for the pending kind
            result = await sdk.runs.answer(run, "Use a friendly tone.")
        else:
            result = await sdk.runs.reject(run.id, "Not now.")
        assert result.id == run.id and result.status != "waiting_input"
    assert run.status == "completed" and sorted(answered) == ["approval", "input"]
    with pytest.raises(ConflictError):
        await sdk.runs.answer(run.id, "too late")
    with pytest.raises(NotFoundError):
        await sdk.runs.approve("ckrun000000000000000000000")


@needs_respond
async def test_sync_poll_answers_two_real_pauses_and_the_email_is_sent(
    temporal: Client, settings: Settings
) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        def __init__(self) -> None:
            self.recipients: list[list[str]] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.recipients.append(list(envelope.rcpt_tos))
            return "250 OK"

    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    mailing = replace(settings, smtp_url=Secret(f"smtp://127.0.0.1:{smtp.port}"))
    kinds: list[str] = []

    def decide(run: Run) -> str | loopllama.Decision:
        assert run.pending is not None
        kinds.append(run.pending.kind)
        return "Friendly." if run.pending.kind == "input" else loopllama.approve()

    def scenario(url: str) -> Run:
        with LoopLlama(API_KEY, url) as client:
            workflow = client.workflows.create(name="hitl", crew=hitl_crew(),
                                               human_in_the_loop=HITL)
            return client.runs.trigger_and_poll(workflow.id, HITL_INPUT, interval=FAST,
                                                timeout=30, on_waiting_input=decide)

    try:
        async with build_worker(temporal, mailing), uvicorn_in_thread(mailing) as url:
            run = await asyncio.to_thread(scenario, url)
    finally:
        smtp.stop()
    assert run.status == "completed", run.error
    assert sorted(kinds) == ["approval", "input"]
    assert sink.recipients == [["bob@example.com"]]


async def test_async_pause_ids_cancel_and_retry(
    sdk: AsyncLoopLlama, worker: Any, temporal: Client, settings: Settings
) -> None:
    workflow = await sdk.workflows.create(name="hitl", crew=hitl_crew(), human_in_the_loop=HITL)
    run = await sdk.runs.poll(await sdk.runs.trigger(workflow.id, HITL_INPUT), interval=FAST,
                              timeout=30)
    assert run.is_waiting and run.pending is not None and run.pending.id
    first, first_pause = run, run.pending.id
    # Passing the paused run sends its pause id: the answer is then safe to resend, and a
    # resend after it was taken is refused instead of answering the next pause.
    await sdk.runs.answer(first, "Use a friendly tone.")
    second = await sdk.runs.poll(run.id, interval=FAST, timeout=30)
    assert second.pending is not None and second.pending.id not in (None, first_pause)
    with pytest.raises(ConflictError, match="already answered"):
        await sdk.runs.answer(first, "Use a friendly tone.")
    with pytest.raises(ConflictError, match="already answered"):
        await sdk.runs.respond(second.id, "approve", pause_id=first_pause)

    cancelled = await sdk.runs.cancel(second)
    assert cancelled.status == "cancelled" and cancelled.is_terminal
    assert cancelled.pending is None and cancelled.finished_at is not None
    assert (await sdk.runs.poll(run.id, interval=FAST, timeout=5)).status == "cancelled"
    with pytest.raises(ConflictError):
        await sdk.runs.cancel(run.id)
    with pytest.raises(ConflictError, match="only a failed run"):
        await sdk.runs.retry(run.id)


async def test_async_retry_a_failed_run(
    sdk: AsyncLoopLlama, temporal: Client, settings: Settings
) -> None:
    # Without a model key the Claude step fails; with one, the retry completes it.
    workflow = await sdk.workflows.create(name="retry", crew=[
        {"role": "writer", "model": "claude-sonnet-4-6", "instructions": "Write."}])
    async with build_worker(temporal, replace(settings, anthropic_api_key=None)):
        failed = await sdk.runs.trigger_and_poll(workflow.id, "Write.", interval=FAST,
                                                 timeout=30)
    assert failed.status == "failed" and failed.error
    async with build_worker(temporal, settings):
        retried = await sdk.runs.retry(failed)
        assert retried.id == failed.id and retried.error is None
        done = await sdk.runs.poll(failed.id, interval=FAST, timeout=30)
    assert done.status == "completed" and done.error is None


# --- The SDK's models and the served schema ---------------------------------------------

# SDK model -> the schema component the server documents for the same object.
SCHEMA_OF: dict[type[pydantic.BaseModel], str] = {
    loopllama.Run: "Run", loopllama.Step: "Step", loopllama.Pending: "Pending",
    loopllama.Workflow: "Workflow", loopllama.Agent: "AgentConfig",
    loopllama.HumanInTheLoop: "HumanInTheLoopConfig", loopllama.CustomTool: "CustomToolConfig",
    loopllama.RespondResult: "RespondAccepted", loopllama.WorkflowDeleted: "WorkflowDeleted",
    loopllama.Webhook: "WebhookConfig", loopllama.McpServer: "McpServerConfig",
    loopllama.McpTool: "McpToolConfig", loopllama.ForkOrigin: "ForkOrigin",
}


async def test_sdk_models_cover_every_field_the_api_documents(
    temporal: Client, settings: Settings
) -> None:
    schema = create_app(settings, temporal).openapi()["components"]["schemas"]
    for model, name in SCHEMA_OF.items():
        served = set(schema[name]["properties"])
        assert set(model.model_fields) == served, (model.__name__, name)
    # And the request bodies the SDK builds use only fields the API accepts.
    assert set(loopllama.Agent.model_fields) == set(schema["Agent"]["properties"])
    assert set(loopllama.CustomTool.model_fields) == set(schema["CustomTool"]["properties"])


async def test_async_custom_tools_round_trip(sdk: AsyncLoopLlama, worker: Any) -> None:
    tool = loopllama.CustomTool(
        name="crm_update", description="Update a contact.", url="https://crm.example.com/u",
        input_schema={"type": "object", "properties": {"name": {"type": "string"}}},
    )
    workflow = await sdk.workflows.create(
        name="crm", crew=[loopllama.Agent(role="a", model=OFFLINE, tools=["crm_update"])],
        tools=[tool],
    )
    assert workflow.tools == [tool]
    changed = await sdk.workflows.update(workflow.id, tools=[tool.model_copy(
        update={"description": "Update a CRM contact."})])
    assert changed.tools[0].description == "Update a CRM contact."
    assert (await sdk.workflows.get(workflow.id)).tools == changed.tools


async def test_async_webhooks_and_secret_rotation(sdk: AsyncLoopLlama, worker: Any) -> None:
    hook = loopllama.Webhook(url="https://hooks.example.com/loopllama", events=["run.failed"])
    workflow = await sdk.workflows.create(
        name="hooked", crew=[loopllama.Agent(role="a", model=OFFLINE)], webhooks=[hook])
    assert workflow.webhooks == [hook]
    first = await sdk.workflows.rotate_webhook_secret(workflow.id)
    second = await sdk.workflows.rotate_webhook_secret(workflow.id)
    assert first.startswith("whsec_") and second.startswith("whsec_") and first != second
    with pytest.raises(NotFoundError):
        await sdk.workflows.rotate_webhook_secret("ckva000000000000000000000")
