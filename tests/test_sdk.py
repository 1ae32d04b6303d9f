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
import json
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from temporalio.client import Client

import loopllama
from api.app import create_app
from api.body_limit import MAX_BODY_BYTES
from core.settings import Secret, Settings
from loopllama import (
    Agent,
    APIConnectionError,
    AsyncLoopLlama,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    HumanInTheLoop,
    LoopLlama,
    LoopLlamaError,
    NotFoundError,
    PollTimeoutError,
    RateLimitError,
    RequestTooLargeError,
    Run,
    ServiceUnavailableError,
    Workflow,
)
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




def assert_utc(run_or_workflow: Run | Workflow) -> None:
    created = run_or_workflow.created_at
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)


# --- Fixtures and helpers: the HTTP stub ------------------------------------------------


@dataclass
class Seen:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


DROP = "drop"  # a handler's reply meaning: close the connection without answering
Reply = tuple[int, dict[str, str], Any] | str
Handler = Callable[[Seen], Reply]


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    handler: Handler
    seen: list[Seen]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (the timeout test) is expected; anything else is shown.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _StubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _StubServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None)
        self.server.seen.append(seen)
        reply = self.server.handler(seen)
        if isinstance(reply, str):  # DROP
            self.close_connection = True
            return
        status, headers, body = reply
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def stub(handler: Handler) -> Iterator[tuple[str, list[Seen]]]:
    """A real HTTP server on 127.0.0.1 answering with `handler`; yields (url, seen)."""
    server = _StubServer(("127.0.0.1", 0), _StubRequestHandler)
    server.handler = handler
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def scripted(*replies: Reply) -> Handler:
    """Answer with `replies` in order, repeating the last one."""
    queue = list(replies)

    def handle(_: Seen) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handle


def error(status: int, error_type: str, message: str, **headers: str) -> Reply:
    return status, headers, {"error": {"type": error_type, "message": message}}


TS = "2026-05-20T17:10:00.000Z"


def run_json(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "ckrun1", "workflow_id": "ckva1", "status": status, "input": "x",
        "output": None, "error": None, "total_steps": 1, "tokens_in": 0, "tokens_out": 0,
        "started_at": TS, "finished_at": None, "created_at": TS, "pending": None,
        "steps": [], **fields,
    }


OK_LIST: Reply = (200, {}, {"data": []})
UNAVAILABLE = error(503, "service_unavailable", "Temporal cannot be reached.", **{
    "Retry-After": "0"})


class PausingRun:
    """A stub run that pauses for a question, then for an approval, then completes.

    `stale_reads`: after each answer, this many GETs still show the old pause (a server
    whose reads lag its writes). `conflict_first`: the first answer gets 409 because
    "someone else" answered it, and the run moves on anyway.
    """

    PAUSES = (
        {"kind": "input", "prompt": "What tone?"},
        {"kind": "approval", "prompt": "Send an email to bob@example.com",
         "tool": "send_email", "tool_input": {"to": "bob@example.com"}},
    )

    def __init__(self, *, stale_reads: int = 0, conflict_first: bool = False) -> None:
        self.stage = 0
        self.stale = 0
        self.stale_reads = stale_reads
        self.conflict_first = conflict_first
        self.lock = threading.Lock()

    def run(self, stage: int) -> dict[str, Any]:
        if stage < len(self.PAUSES):
            return run_json("waiting_input", pending=self.PAUSES[stage], tokens_in=10 * stage + 5)
        return run_json("completed", output="done", tokens_in=99, finished_at=TS)

    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            if seen.method == "GET" and seen.path == "/v1/runs/ckrun1":
                stage = self.stage - 1 if self.stale > 0 else self.stage
                self.stale = max(0, self.stale - 1)
                return 200, {}, {"data": self.run(stage)}
            if seen.method == "POST" and seen.path == "/v1/runs/ckrun1/respond":
                if self.stage >= len(self.PAUSES):
                    return error(409, "conflict_error", "Run ckrun1 is not waiting for input.")
                expected = ("input",) if self.stage == 0 else ("approve", "reject")
                if seen.body["action"] not in expected:
                    return error(400, "invalid_request_error", "action does not match.")
                self.stage += 1
                self.stale = self.stale_reads
                if self.conflict_first and self.stage == 1:
                    return error(409, "conflict_error", "Someone else answered first.")
                return 202, {}, {"data": {"id": "ckrun1", "status": "running"}}
            return error(404, "not_found_error", f"No route {seen.path}")


def responds(seen: list[Seen]) -> list[Any]:
    return [s.body for s in seen if s.path.endswith("/respond")]


# --- Configuration ----------------------------------------------------------------------


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPLLAMA_API_KEY", raising=False)
    monkeypatch.delenv("LOOPLLAMA_BASE_URL", raising=False)
    with pytest.raises(LoopLlamaError, match="LOOPLLAMA_API_KEY"):
        LoopLlama()
    with pytest.raises(LoopLlamaError, match="LOOPLLAMA_API_KEY"):
        AsyncLoopLlama()
    assert LoopLlama("k").base_url == "http://127.0.0.1:8000"

    extra = run_json("archived", brand_new_field={"x": 1})  # a newer server's answer
    with stub(scripted((200, {}, {"data": extra}))) as (url, seen):
        monkeypatch.setenv("LOOPLLAMA_API_KEY", "env-key")
        monkeypatch.setenv("LOOPLLAMA_BASE_URL", url + "/v1/")  # as `loopllama dev` prints
        with LoopLlama() as client:
            assert "env-key" not in repr(client)
            run = client.runs.get("ckrun1")
    assert run.status == "archived" and not run.is_terminal and not run.is_waiting
    assert_utc(run)
    (request,) = seen
    assert (request.method, request.path) == ("GET", "/v1/runs/ckrun1")
    assert request.headers["authorization"] == "Bearer env-key"


def test_ids_cannot_escape_their_path_segment() -> None:
    with stub(scripted(error(404, "not_found_error", "No run."))) as (url, seen):
        with LoopLlama("k", url) as client, pytest.raises(NotFoundError):
            client.runs.get("../workflows")
    assert seen[0].path == "/v1/runs/..%2Fworkflows"


# --- The async client against the real API ---------------------------------------------


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
    assert_utc(created)

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


# --- Retries (HTTP stub) ----------------------------------------------------------------


def test_sync_retries_503_twice_then_succeeds() -> None:
    with stub(scripted(UNAVAILABLE, UNAVAILABLE, OK_LIST)) as (url, seen):
        with LoopLlama("k", url, max_retries=2) as client:
            assert client.workflows.list() == []
    assert len(seen) == 3


async def test_async_retries_429_and_503_then_succeeds() -> None:
    limited = error(429, "rate_limit_error", "Slow down.", **{"Retry-After": "0"})
    with stub(scripted(limited, UNAVAILABLE, OK_LIST)) as (url, seen):
        async with AsyncLoopLlama("k", url, max_retries=2) as client:
            assert await client.workflows.list() == []
    assert len(seen) == 3


@pytest.mark.parametrize("client_kind", ["sync", "async"])
async def test_400_is_never_retried(client_kind: str) -> None:
    refused = error(400, "invalid_request_error", "crew: must have at least 1 agent.")
    with stub(scripted(refused)) as (url, seen):
        with pytest.raises(BadRequestError, match="crew: must have at least 1 agent"):
            if client_kind == "sync":

                def create() -> None:
                    with LoopLlama("k", url) as client:
                        client.workflows.create(name="x", crew=[])

                await asyncio.to_thread(create)
            else:
                async with AsyncLoopLlama("k", url) as client:
                    await client.workflows.create(name="x", crew=[])
    assert len(seen) == 1
    assert seen[0].body == {"name": "x", "crew": []}


def test_retries_stop_at_max_retries_and_other_statuses_are_not_retried() -> None:
    with stub(scripted(UNAVAILABLE)) as (url, seen), LoopLlama("k", url) as client:
        with pytest.raises(ServiceUnavailableError, match="Temporal cannot be reached"):
            client.workflows.list()
        assert len(seen) == 3  # 1 + max_retries (2)
    limited = error(429, "rate_limit_error", "Slow down.", **{"Retry-After": "0"})
    with stub(scripted(limited)) as (url, seen):
        with LoopLlama("k", url, max_retries=0) as client, pytest.raises(RateLimitError):
            client.workflows.list()
        assert len(seen) == 1
    for reply in (error(500, "api_error", "Internal error; it has been logged."),
                  (502, {"Content-Type": "text/html"}, b"<html>Bad gateway</html>"),
                  error(409, "conflict_error", "Paused.")):
        with stub(scripted(reply)) as (url, seen), LoopLlama("k", url) as client:
            with pytest.raises(loopllama.APIStatusError) as failed:
                client.workflows.list()
            assert len(seen) == 1
        assert failed.value.status == reply[0]
    assert isinstance(failed.value, ConflictError)


def test_backoff_and_retry_after() -> None:
    with stub(scripted(error(503, "service_unavailable", "Down."), OK_LIST)) as (url, seen):
        with LoopLlama("k", url, max_retries=1) as client:
            started = time.monotonic()
            client.workflows.list()
            waited = time.monotonic() - started
    assert len(seen) == 2 and 0.3 <= waited < 3  # 0.5 s ± 25% jitter
    limited = error(429, "rate_limit_error", "Slow down.", **{"Retry-After": "1"})
    with stub(scripted(limited, OK_LIST)) as (url, seen):
        with LoopLlama("k", url, max_retries=1) as client:
            started = time.monotonic()
            client.workflows.list()
            waited = time.monotonic() - started
    assert len(seen) == 2 and 0.9 <= waited < 3


def test_connection_errors() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with LoopLlama("k", closed, max_retries=0) as client:
        with pytest.raises(APIConnectionError):
            client.workflows.list()
    # A dropped connection may have reached the server: reads are resent, and so are
    # create and trigger, which carry one Idempotency-Key for all their attempts; an
    # answer to a pause is not (it could answer the next pause).
    with stub(scripted(DROP)) as (url, seen), LoopLlama("k", url, max_retries=2) as client:
        with pytest.raises(APIConnectionError):
            client.runs.get("ckrun1")
        assert len(seen) == 3
        for act in (lambda: client.runs.trigger("ckva1", "x"),
                    lambda: client.workflows.create(name="x", crew=[])):
            seen.clear()
            with pytest.raises(APIConnectionError):
                act()
            keys = [s.headers.get("idempotency-key") for s in seen]
            assert len(keys) == 3 and keys[0] and len(set(keys)) == 1
        seen.clear()
        with pytest.raises(APIConnectionError):
            client.runs.answer("ckrun1", "yes")
        assert len(seen) == 1
        assert "idempotency-key" not in seen[0].headers
        # Each call gets its own key.
        seen.clear()
        for _ in range(2):
            with pytest.raises(APIConnectionError):
                client.runs.trigger("ckva1", "x")
        assert len({s.headers.get("idempotency-key") for s in seen}) == 2


async def test_unreadable_answers_and_timeouts() -> None:
    unreadable: list[Reply] = [
        (200, {}, b"not json"), (200, {}, {"workflows": []}),
        (200, {}, {"data": {"not": "a list"}}), (200, {}, {"data": [{"id": 1}]}),
    ]
    for reply in unreadable:
        with stub(scripted(reply)) as (url, _):
            async with AsyncLoopLlama("k", url) as client:
                with pytest.raises(loopllama.APIResponseValidationError):
                    await client.workflows.list()

    def slow(_: Seen) -> Reply:
        time.sleep(1)
        return OK_LIST

    with stub(slow) as (url, seen):
        async with AsyncLoopLlama("k", url, timeout=0.2, max_retries=0) as client:
            with pytest.raises(loopllama.APITimeoutError):
                await client.workflows.list()
    assert len(seen) == 1


# --- poll() and human-in-the-loop (HTTP stub) -------------------------------------------


def test_sync_poll_answers_two_pauses_with_a_callback() -> None:
    kinds: list[str] = []

    def decide(run: Run) -> str | loopllama.Decision:
        assert run.pending is not None and run.is_waiting
        kinds.append(run.pending.kind)
        return "Friendly." if run.pending.kind == "input" else loopllama.approve()

    # Reads that lag the answer must not make the callback answer the same pause twice.
    with stub(PausingRun(stale_reads=1)) as (url, seen), LoopLlama("k", url) as client:
        run = client.runs.poll("ckrun1", interval=0.02, timeout=10, on_waiting_input=decide)
    assert run.status == "completed" and run.output == "done"
    assert kinds == ["input", "approval"]
    assert responds(seen) == [{"action": "input", "input": "Friendly."}, {"action": "approve"}]


async def test_async_poll_with_async_callback_none_and_409() -> None:
    calls: list[str] = []

    async def decide(run: Run) -> str | loopllama.Decision | None:
        assert run.pending is not None
        calls.append(run.pending.kind)
        if run.pending.kind == "input":
            return None if calls.count("input") == 1 else "Friendly."  # later, then answer
        return loopllama.reject("Not external addresses.")

    with stub(PausingRun(conflict_first=True)) as (url, seen):
        async with AsyncLoopLlama("k", url) as client:
            run = await client.runs.poll("ckrun1", interval=0.02, timeout=10,
                                         on_waiting_input=decide)
    assert run.status == "completed"
    assert calls == ["input", "input", "approval"]  # the 409 was not an error
    assert responds(seen) == [
        {"action": "input", "input": "Friendly."},
        {"action": "reject", "reason": "Not external addresses."},
    ]


async def test_poll_without_callback_returns_the_paused_run_and_bad_callbacks_fail() -> None:
    with stub(PausingRun()) as (url, _):
        async with AsyncLoopLlama("k", url) as client:
            paused = await client.runs.poll("ckrun1", interval=0.02, timeout=10)
            assert paused.is_waiting and paused.pending is not None
            assert (paused.pending.kind, paused.pending.prompt) == ("input", "What tone?")
            with pytest.raises(TypeError, match="on_waiting_input must return"):
                await client.runs.poll(
                    "ckrun1", on_waiting_input=lambda run: 42  # type: ignore[arg-type, return-value]
                )
            with pytest.raises(BadRequestError, match="action does not match"):
                await client.runs.poll("ckrun1", on_waiting_input=lambda run: loopllama.approve())
            result = await client.runs.answer(paused, "Friendly.")
            assert (result.id, result.status) == ("ckrun1", "running")
            approval = await client.runs.get("ckrun1")
            assert approval.pending is not None and approval.pending.tool == "send_email"
            assert approval.pending.tool_input == {"to": "bob@example.com"}
            await client.runs.reject("ckrun1", "no")
            with pytest.raises(ConflictError):
                await client.runs.approve("ckrun1")

    async def later(run: Run) -> None:
        return None

    with stub(PausingRun()) as (url, _), LoopLlama("k", url) as sync_client:
        with pytest.raises(TypeError, match="AsyncLoopLlama"):
            sync_client.runs.poll(
                "ckrun1", interval=0.02, on_waiting_input=later  # type: ignore[arg-type]
            )
        with pytest.raises(LoopLlamaError, match="interval"):
            sync_client.runs.poll("ckrun1", interval=0)


# --- Human in the loop through the real server (once the respond endpoint exists) -------


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
SCHEMA_OF = {
    loopllama.Run: "Run", loopllama.Step: "Step", loopllama.Pending: "Pending",
    loopllama.Workflow: "Workflow", loopllama.Agent: "AgentConfig",
    loopllama.HumanInTheLoop: "HumanInTheLoopConfig", loopllama.CustomTool: "CustomToolConfig",
    loopllama.RespondResult: "RespondAccepted", loopllama.WorkflowDeleted: "WorkflowDeleted",
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
