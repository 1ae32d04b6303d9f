"""Hardening of reads, model calls and declarations against odd input (issue 20):

- lists leave out every row they cannot read, whatever the reason, and stay right;
  reads of such a row answer 404;
- a model reply no run can store fails its step at once, without paying for retries;
- provider errors reach no run, event or log with a key in them;
- custom tool endpoints follow the webhooks' create-time address policy;
- the losers of a respond race are told the pause was already answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import typing
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest
from temporalio.api.common.v1 import Memo, Payload, SearchAttributes, WorkflowType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import StartWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import encode_search_attributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput

from activities.expected_failures import ExpectedFailures
from activities.models.anthropic import model_response
from activities.models.replies import MAX_REPLY_DEPTH, nesting
from api.app import create_app
from api.services import run_truth
from api.services.run_list import newest_runs
from core.contract import MODEL_REPLY_UNUSABLE, RUN_WORKFLOW_TYPE
from core.ids import RUN_PREFIX, WORKFLOW_PREFIX, new_id
from core.redaction import REDACTED, redact
from core.settings import Settings
from core.temporal import SA_CREATED_AT, SA_STATUS, SA_WORKFLOW_ID
from tests.conftest import API_KEY, crew, eventually, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, get_run, trigger, wait_for_status
from workflows.definition import DEFINITION_WORKFLOW_TYPE, MEMO_KEY

OFFLINE = "loopllama-offline"
NOBODY = "nobody-polls-this-queue"


# ----------------------------------------------------------------- foreign executions


def plain(client: Client, value: Any) -> Payload:
    """`value` as LoopLlama's converter writes it."""
    (payload,) = client.data_converter.payload_converter.to_payloads([value])
    return payload


UNKNOWN_ENCODING = Payload(metadata={"encoding": b"binary/no-such-encoding"}, data=b"\x00")
BAD_JSON = Payload(metadata={"encoding": b"json/plain"}, data=b'{"run": {nope')


async def start_foreign(
    client: Client, workflow_type: str, workflow_id: str, memo: dict[str, Any],
    attributes: Sequence[SearchAttributePair[Any]] = (),
) -> None:
    """Start an execution in Temporal directly, as someone with Temporal access (not the
    API) might: any memo (values, or raw payloads that need not decode) and any search
    attributes, on a task queue no worker polls."""
    fields = {key: value if isinstance(value, Payload) else plain(client, value)
              for key, value in memo.items()}
    indexed = SearchAttributes()
    encode_search_attributes(TypedSearchAttributes(list(attributes)), indexed)
    await client.workflow_service.start_workflow_execution(StartWorkflowExecutionRequest(
        namespace=client.namespace, workflow_id=workflow_id,
        workflow_type=WorkflowType(name=workflow_type), task_queue=TaskQueue(name=NOBODY),
        memo=Memo(fields=fields), search_attributes=indexed,
        request_id=str(uuid.uuid4()), identity="a hand in Temporal",
    ))


async def terminate_all(client: Client, workflow_ids: list[str]) -> None:
    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate("test done")
        except RPCError:
            pass  # already closed


def run_attributes(workflow_id: str, created: datetime | None) -> list[SearchAttributePair[Any]]:
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SA_WORKFLOW_ID, workflow_id), SearchAttributePair(SA_STATUS, "queued")]
    if created is not None:
        pairs.append(SearchAttributePair(SA_CREATED_AT, created))
    return pairs


def left_out_lines(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records
                     if r.name == "loopllama.api" and "out of a list" in r.getMessage())


async def test_unreadable_rows_are_left_out_of_the_run_list_which_stays_right(
    api: httpx.AsyncClient, worker: Any, temporal: Client, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="loopllama.api")
    workflow = await create_workflow(api, crew("solo", model=OFFLINE))
    other = await create_workflow(api, crew("solo", model=OFFLINE))
    crew_id = workflow["id"]
    real = [(await trigger(api, crew_id, f"run {i}"))["id"] for i in range(5)]
    runs = [await wait_for_status(api, run_id, "completed") for run_id in real]
    created = [datetime.fromisoformat(r["created_at"]) for r in runs]
    marker = f"MEMO-CONTENTS-{unique_tag()}"
    header = {key: runs[0][key] for key in ("id", "workflow_id", "input", "created_at")}

    def own(run_id: str, **fields: Any) -> dict[str, Any]:
        return {**header, "id": run_id, "input": marker, **fields}

    # One row of each kind a list cannot read; each placed just after a real run, so
    # they interleave with the real ones and several rank above the newest.
    kinds: dict[str, tuple[str, dict[str, Any], bool]] = {}  # id: (kind, memo, has SA)

    def add(kind: str, memo_for: Any, *, run_id: str | None = None,
            created_at: bool = True) -> None:
        run_id = run_id or new_id(RUN_PREFIX)
        kinds[run_id] = (kind, memo_for(run_id), created_at)

    add("fails validation", lambda _: {"run": {"bogus": 1, "note": marker}})
    add("wrong types", lambda i: {"run": own(i, status=7, tokens_in="many")})
    add("not an object", lambda _: {"run": [marker]})
    add("no run entry", lambda _: {"other": {"note": marker}})
    add("missing fields", lambda i: {"run": {"id": i, "note": marker}})
    add("undecodable", lambda _: {"run": UNKNOWN_ENCODING})
    add("not JSON", lambda _: {"run": BAD_JSON})
    add("another run's memo", lambda _: {"run": own(real[0])})
    add("another crew's run", lambda i: {"run": own(i, workflow_id=other["id"])})
    add("created_at not its own", lambda i: {"run": own(i, created_at="2001-01-01T00:00:00.000Z")})
    add("not a run id", lambda i: {"run": own(i)}, run_id=f"foreign-{unique_tag()}")
    add("no creation time", lambda i: {"run": own(i)}, created_at=False)
    add("its end cannot be read", lambda i: {"run": own(i, status="running")})
    foreign = list(kinds)
    try:
        for index, (run_id, (_, memo, has_created)) in enumerate(kinds.items()):
            at = created[index % len(created)] + timedelta(milliseconds=1)
            await start_foreign(temporal, RUN_WORKFLOW_TYPE, run_id, memo,
                                run_attributes(crew_id, at if has_created else None))
        # A run that ended in Temporal without publishing is reconciled from its close
        # event; here reading that event fails.
        unreadable_end = foreign[-1]
        await temporal.get_workflow_handle(unreadable_end).terminate("by hand")
        real_close_event = run_truth._close_event

        async def failing_close_event(client: Client, run_id: str, temporal_run_id: str | None
                                      ) -> Any:
            if run_id == unreadable_end:
                raise RPCError("history unavailable", RPCStatusCode.UNAVAILABLE, b"")
            return await real_close_event(client, run_id, temporal_run_id)

        monkeypatch.setattr(run_truth, "_close_event", failing_close_event)

        async def listed() -> list[str] | None:
            response = await api.get(f"/v1/workflows/{crew_id}/runs")
            assert response.status_code == 200, response.text
            ids = [r["id"] for r in response.json()["data"]]
            # Visibility trails a start by milliseconds: wait until every row was met.
            return ids if all(i in left_out_lines(caplog) for i in foreign) else None

        ids = await eventually(listed, within=10)
        assert ids == list(reversed(real))
        # Every row was logged by id and reason, never with what its memo holds.
        lines = left_out_lines(caplog)
        assert marker not in lines and "bogus" not in lines
        # Fewer places than rows: the next readable runs take the places of those left
        # out, in order, whatever the limit.
        for limit in range(1, 6):
            got = await newest_runs(temporal, crew_id, limit)
            assert [r.id for r in got] == list(reversed(real))[:limit], (limit, got)
        # Reads of a foreign execution whose memo is not a run's are 404, not 500.
        for run_id, (kind, _, _) in kinds.items():
            if kind not in ("fails validation", "wrong types", "not an object",
                            "no run entry", "missing fields", "not a run id",
                            "undecodable", "not JSON", "another run's memo"):
                continue  # readable as a run by GET
            response = await api.get(f"/v1/runs/{run_id}")
            assert response.status_code == 404, (kind, response.text)
            assert response.json()["error"]["type"] == "not_found_error"
    finally:
        await terminate_all(temporal, foreign)


async def test_unreadable_rows_are_left_out_of_the_workflow_list_and_read_as_404(
    api: httpx.AsyncClient, temporal: Client, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="loopllama.api")
    mine = [(await create_workflow(api, crew("solo", model=OFFLINE)))["id"] for _ in range(3)]
    got = await api.get(f"/v1/workflows/{mine[0]}")
    stored = got.json()["data"]
    marker = f"MEMO-CONTENTS-{unique_tag()}"
    foreign: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(kind: str, memo_for: Any, *, workflow_id: str | None = None) -> None:
        workflow_id = workflow_id or new_id(WORKFLOW_PREFIX)
        foreign[workflow_id] = (kind, memo_for(workflow_id))

    add("fails validation", lambda _: {MEMO_KEY: {"bogus": 1, "note": marker}})
    add("wrong types", lambda i: {MEMO_KEY: {**stored, "id": i, "name": 5, "crew": marker}})
    add("not an object", lambda _: {MEMO_KEY: marker})
    add("no definition entry", lambda _: {"other": {"note": marker}})
    add("missing fields", lambda i: {MEMO_KEY: {"id": i, "name": marker}})
    add("undecodable", lambda _: {MEMO_KEY: UNKNOWN_ENCODING})
    add("not JSON", lambda _: {MEMO_KEY: BAD_JSON})
    add("another workflow's memo", lambda _: {MEMO_KEY: stored})
    add("a time without a zone", lambda i: {MEMO_KEY: {
        **stored, "id": i, "created_at": "2026-01-01T00:00:00"}})
    add("not a workflow id", lambda i: {MEMO_KEY: {**stored, "id": i}},
        workflow_id=f"foreign-{unique_tag()}")
    try:
        for workflow_id, (_, memo) in foreign.items():
            await start_foreign(temporal, DEFINITION_WORKFLOW_TYPE, workflow_id, memo)

        async def listed() -> list[dict[str, Any]] | None:
            response = await api.get("/v1/workflows")
            assert response.status_code == 200, response.text
            lines = left_out_lines(caplog)
            return response.json()["data"] if all(i in lines for i in foreign) else None

        items = await eventually(listed, within=10)
        ids = [w["id"] for w in items]
        assert not set(ids) & set(foreign)
        assert [i for i in ids if i in mine] == list(reversed(mine))
        assert ids.count(mine[0]) == 1  # the copy of its memo elsewhere is not a double
        stamps = [(w["created_at"], w["id"]) for w in items]
        assert stamps == sorted(stamps, reverse=True)
        lines = left_out_lines(caplog)
        assert marker not in lines and "bogus" not in lines
        for workflow_id, (kind, _) in foreign.items():
            for path in (f"/v1/workflows/{workflow_id}", f"/v1/workflows/{workflow_id}/runs"):
                response = await api.get(path)
                assert response.status_code == 404, (kind, path, response.text)
            response = await api.post(f"/v1/workflows/{workflow_id}/runs", json={"input": "x"})
            assert response.status_code == 404, (kind, response.text)
    finally:
        await terminate_all(temporal, list(foreign))


# ------------------------------------------------------------------- model replies


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [150, 400])
async def test_a_reply_nested_too_deep_fails_the_step_at_once(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic, depth: int,
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_tool_use("lookup", nested(depth), when=writer)
    # What a retry would be given: a retry would complete the run.
    fake_anthropic.reply_text("written", when=writer)
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Write."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "failed"
    assert fake_anthropic.count(writer) == 1
    assert done["error"].startswith("Step 1 (writer) failed: The model's reply cannot be used")
    assert f"nested more than {MAX_REPLY_DEPTH} levels" in done["error"]
    assert "'lookup'" in done["error"] and "Not retried" in done["error"]
    assert "gave up" not in done["error"]


def message(**fields: Any) -> anthropic.types.Message:
    base: dict[str, Any] = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "stop_reason": "end_turn",
        "content": [anthropic.types.TextBlock(type="text", text="hi")],
        "usage": anthropic.types.Usage(input_tokens=1, output_tokens=1),
    }
    return anthropic.types.Message.model_construct(**{**base, **fields})


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic, about the odd replies
def test_a_reply_that_is_not_a_reply_is_refused_without_retry() -> None:
    assert model_response(message()).text() == "hi"
    for odd in (
        message(usage=anthropic.types.Usage.model_construct(input_tokens=None,
                                                            output_tokens=1)),
        message(content=[object()]),
        message(content=[anthropic.types.TextBlock.model_construct(
            type="text", text=nested(MAX_REPLY_DEPTH + 5))]),
        message(stop_reason={"not": "a string"}),
    ):
        with pytest.raises(ApplicationError) as raised:
            model_response(odd)
        assert raised.value.type == MODEL_REPLY_UNUSABLE and raised.value.non_retryable
        assert raised.value.message.startswith("The model's reply cannot be used: ")


def test_nesting_is_counted_without_recursion() -> None:
    assert nesting("x", 10) == 0 and nesting({}, 10) == 1 and nesting([{"a": [1]}], 10) == 3
    assert nesting(nested(100_000), 100) == 101  # stops looking past the limit


# ------------------------------------------------------------------ keys in errors

TOKEN = "xyzABC0123456789abcdefLEAK"


@pytest.mark.parametrize("status", [400, 401])
async def test_provider_errors_reach_no_run_or_event_with_a_key(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic, settings: Settings,
    status: int,
) -> None:
    assert settings.anthropic_api_key is not None
    key = settings.anthropic_api_key.value
    tag = unique_tag()
    writer = for_role(tag, "writer")
    # What gateways and local servers echo: the key they were sent, a bearer token, and
    # (a key of this deployment's own) the LoopLlama API key.
    fake_anthropic.reply_error(status, message=(
        f"invalid x-api-key: {key} (sent as Authorization: Bearer {TOKEN}; "
        f"also saw {API_KEY} and sk-ant-api03-{TOKEN})"), when=writer)
    workflow = await create_workflow(api, crew("writer", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Write."))["id"]
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "failed" and fake_anthropic.count(writer) == 1
    assert f"rejected the request ({status}: invalid x-api-key: {REDACTED}" in done["error"]
    assert f"Bearer {REDACTED}" in done["error"]
    events = await api.get(f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"})
    assert events.status_code == 200 and "run.failed" in events.text
    listed = await api.get(f"/v1/workflows/{workflow['id']}/runs")
    for text in (json.dumps(done), (await api.get(f"/v1/runs/{run_id}")).text, events.text,
                 listed.text):
        for secret in (key, TOKEN, API_KEY, "Bearer xyz"):
            assert secret not in text, secret


class _Raising(ActivityInboundInterceptor):
    """An activity that fails with `error` (not an ApplicationError: a bug)."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        raise self._error


async def test_an_unexpected_failure_leaves_its_activity_without_a_key() -> None:
    configured = "sk-configured-0123456789"
    for error, leaves in (
        (ValueError(f"bad reply from {configured}, Bearer {TOKEN}"), ApplicationError),
        (KeyError("usage"), KeyError),  # nothing to redact: the bug as it is
    ):
        wrapped = ExpectedFailures((configured,)).intercept_activity(_Raising(error))

        async def execute(wrapped: ActivityInboundInterceptor = wrapped) -> None:
            await wrapped.execute_activity(typing.cast(ExecuteActivityInput, None))

        with pytest.raises(Exception) as raised:  # noqa: PT011 - the type is checked below
            await ActivityEnvironment().run(execute)
        assert type(raised.value) is leaves
        if leaves is ApplicationError:
            failure = typing.cast(ApplicationError, raised.value)
            assert failure.type == "ValueError" and not failure.non_retryable
            assert failure.message == f"bad reply from {REDACTED}, Bearer {REDACTED}"
        else:
            assert raised.value is error


def test_one_redaction_for_logs_and_errors() -> None:
    assert redact("key sk-configured-0123 here", ("sk-configured-0123",)) == "key [redacted] here"
    for leaky, kept in (
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer"),
        (f"x-api-key: {TOKEN}", "x-api-key:"),
        ('{"api_key": "abc123"}', '{"api_key":'),
        (f"invalid key {TOKEN}", "invalid key"),
        (f"token={TOKEN}", "token="),
        ("smtp://me:hunter2@mail.example:587", "smtp://me:"),
        (f"sk-ant-api03-{TOKEN}", ""),
        (f"Basic {TOKEN}==", "Basic"),
    ):
        redacted = redact(leaky)
        assert TOKEN not in redacted and "hunter2" not in redacted and "abc123" not in redacted
        assert redacted.startswith(kept) and REDACTED in redacted, redacted
    for plain_text in ("prompt is too long: 200001 tokens > 200000 maximum",
                       "basic authentication failed", "max_tokens: 64000",
                       "Idempotency-Key: ckrun0123456789abcdefghijk:0:1:0",
                       "the model claude-sonnet-4-6 was not found"):
        assert redact(plain_text) == plain_text


# ------------------------------------------------------------- custom tool endpoints


def crm(url: str) -> dict[str, Any]:
    return {"name": "crm_update", "description": "Update a contact.",
            "input_schema": {"type": "object"}, "url": url}


@pytest.fixture
async def allowlisted_api(temporal: Client, settings: Settings
                          ) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose settings allow-list 127.0.0.1, as webhooks' tests have it."""
    app = create_app(replace(settings, http_allowlist=("127.0.0.1",)), temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


async def test_custom_tool_endpoints_follow_the_webhooks_create_time_policy(
    api: httpx.AsyncClient, allowlisted_api: httpx.AsyncClient, worker: Any,
) -> None:
    agent = crew("crm", model=OFFLINE, tools=["crm_update"])
    for url, reason in (("http://127.0.0.1:9/crm", "plain http"),
                        ("https://127.0.0.1/crm", "non-public address 127.0.0.1"),
                        ("https://localhost/crm", "non-public address"),
                        ("http://crm.example.com/u", "plain http")):
        response = await api.post("/v1/workflows", json={
            "name": "refused", "crew": agent, "tools": [crm(url)]})
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert "tools.0.url" in error["message"] and "'crm_update'" in error["message"]
        assert reason in error["message"] and "LOOPLLAMA_HTTP_ALLOWLIST" in error["message"]
    workflow = await create_workflow(api, agent, tools=[crm("https://crm.example.com/u")])
    patched = await api.patch(f"/v1/workflows/{workflow['id']}",
                              json={"tools": [crm("https://127.0.0.1/crm")]})
    assert patched.status_code == 400 and "'crm_update'" in patched.text
    unchanged = (await api.get(f"/v1/workflows/{workflow['id']}")).json()["data"]
    assert unchanged["tools"][0]["url"] == "https://crm.example.com/u"
    # The allow-list webhooks honour lets a tool on it through, and only that host.
    listed = await create_workflow(allowlisted_api, agent, tools=[crm("http://127.0.0.1:9/crm")])
    assert listed["tools"][0]["url"] == "http://127.0.0.1:9/crm"
    by_name = await allowlisted_api.post("/v1/workflows", json={
        "name": "refused", "crew": agent, "tools": [crm("http://localhost:9/crm")]})
    assert by_name.status_code == 400, by_name.text
    moved = await allowlisted_api.patch(f"/v1/workflows/{workflow['id']}",
                                        json={"tools": [crm("http://127.0.0.1:9/crm")]})
    assert moved.status_code == 200, moved.text


# ------------------------------------------------------------------- respond race


async def test_the_losers_of_a_respond_race_are_told_it_was_answered(
    api: httpx.AsyncClient, worker: Any,
) -> None:
    workflow = await create_workflow(api, crew("writer", model=OFFLINE),
                                     human_in_the_loop={"allow_input_requests": True})
    run_id = (await trigger(api, workflow["id"], "Write the brief; ask me about tone."))["id"]
    waiting = await wait_for_status(api, run_id, "waiting_input")
    assert waiting["pending"]["kind"] == "input"
    answers = await asyncio.gather(*(
        api.post(f"/v1/runs/{run_id}/respond", json={"action": "input", "input": f"tone {i}"})
        for i in range(20)))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [202] + [409] * 19, [r.text for r in answers]
    for response in answers:
        if response.status_code == 409:
            message_text = response.json()["error"]["message"]
            assert "is waiting_input, not waiting_input" not in message_text, message_text
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert (await get_run(api, run_id))["pending"] is None
