"""The SDK against a real HTTP stub on 127.0.0.1: configuration, retries, errors the
API never produces (429, 500, dropped connections) and the poll loop's edge cases.

Needs only the SDK and pytest (`pip install ./sdk[test]`); the tests against the real
server are in the server's tests/test_sdk.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import loopllama
import pytest
from loopllama import (
    APIConnectionError,
    AsyncLoopLlama,
    BadRequestError,
    ConflictError,
    LoopLlama,
    LoopLlamaError,
    NotFoundError,
    RateLimitError,
    Run,
    ServiceUnavailableError,
    Workflow,
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def test_a_respond_without_pause_id_is_not_retried_on_503() -> None:
    # A 503 may come after the answer reached Temporal, which still applies it: resent
    # without a pause id, it could answer the next pause.
    accepted: Reply = (202, {}, {"data": {"id": "ckrun1", "status": "running"}})
    with stub(scripted(UNAVAILABLE, accepted)) as (url, seen):
        with LoopLlama("k", url, max_retries=2) as client, pytest.raises(
                ServiceUnavailableError):
            client.runs.approve("ckrun1")
    assert len(seen) == 1
    with stub(scripted(UNAVAILABLE, accepted)) as (url, seen):
        with LoopLlama("k", url, max_retries=2) as client:
            client.runs.respond("ckrun1", "approve", pause_id="ckpause1")  # 503, then 202
    assert [s.body for s in seen] == [{"action": "approve", "pause_id": "ckpause1"}] * 2


# --- Crew graphs: after, max_parallel, several open pauses (HTTP stub) -----------------


def workflow_json(**fields: Any) -> dict[str, Any]:
    return {"id": "ckva1", "name": "graph", "description": "", "status": "active",
            "crew": [], "human_in_the_loop": {}, "tools": [], "webhooks": [],
            "created_at": TS, "updated_at": TS, **fields}


GRAPH_CREW = [
    {"role": "planner", "model": "m", "after": None},
    {"role": "researcher", "model": "m", "after": ["planner"]},
    {"role": "writer", "model": "m", "after": []},
]


async def test_graph_fields_are_sent_only_when_given_and_read_back() -> None:
    served = workflow_json(crew=GRAPH_CREW, max_parallel=3)
    with stub(scripted((201, {}, {"data": served}))) as (url, seen):
        with LoopLlama("k", url) as client:
            made = client.workflows.create(
                name="graph", max_parallel=3,
                crew=[loopllama.Agent(role="planner", model="m"),
                      loopllama.Agent(role="researcher", model="m", after=["planner"]),
                      {"role": "writer", "model": "m", "after": []}],
            )
            client.workflows.update("ckva1", max_parallel=64)
            client.workflows.update("ckva1", name="renamed")
        async with AsyncLoopLlama("k", url) as async_client:
            await async_client.workflows.create(name="graph", crew=[], max_parallel=1)
            await async_client.workflows.update("ckva1", max_parallel=2)
    # An Agent without `after` sends none (the server's chain default applies); `[]`
    # is sent as it is: "start at once".
    assert seen[0].body == {"name": "graph", "max_parallel": 3, "crew": [
        {"role": "planner", "model": "m"},
        {"role": "researcher", "model": "m", "after": ["planner"]},
        {"role": "writer", "model": "m", "after": []},
    ]}
    assert [s.body for s in seen[1:]] == [
        {"max_parallel": 64}, {"name": "renamed"},
        {"name": "graph", "crew": [], "max_parallel": 1}, {"max_parallel": 2},
    ]
    assert [s.method for s in seen] == ["POST", "PATCH", "PATCH", "POST", "PATCH"]
    assert made.max_parallel == 3
    assert [agent.after for agent in made.crew] == [None, ["planner"], []]
    # An older server's workflow: no max_parallel, no after.
    old = Workflow.model_validate(workflow_json(crew=[{"role": "a", "model": "m"}]))
    assert old.max_parallel == 8 and old.crew[0].after is None


def test_run_pauses_parse_and_older_servers_still_list_their_pause() -> None:
    first = {"id": "p1", "kind": "input", "prompt": "Which sources?", "step_id": "s2",
             "role": "researcher"}
    second = {"id": "p2", "kind": "approval", "prompt": "Send it?", "tool": "send_email",
              "tool_input": {"to": "bob@example.com"}, "step_id": "s3", "role": "writer"}
    run = Run.model_validate(run_json("waiting_input", pending=first,
                                      pauses=[first, second]))
    assert [(p.id, p.role, p.step_id) for p in run.pauses] == [
        ("p1", "researcher", "s2"), ("p2", "writer", "s3")]
    assert run.pending == run.pauses[0] and run.open_pauses == run.pauses
    assert run.pauses[1].tool_input == {"to": "bob@example.com"}
    # A server from before crew graphs: `pending` only, no role or step id.
    old = Run.model_validate(run_json("waiting_input", pending={"id": "p1", "kind": "input"}))
    assert old.pauses == [] and [p.id for p in old.open_pauses] == ["p1"]
    assert old.open_pauses[0].role is None and old.open_pauses[0].step_id is None
    assert Run.model_validate(run_json("running", pauses=None)).open_pauses == []


class ParallelRun:
    """A stub run whose researcher and writer pause at once; once both are answered the
    editor pauses, then the run completes.

    Answers must name an open pause (`pause_id`; without one the oldest is answered, as
    the server does); any other gets 409. `stale_reads`: after each answer, this many
    GETs still show the run as it was before it.
    """

    RESEARCH: ClassVar[dict[str, Any]] = {
        "id": "p1", "kind": "input", "prompt": "Which sources?", "step_id": "s2",
        "role": "researcher"}
    WRITE: ClassVar[dict[str, Any]] = {
        "id": "p2", "kind": "approval", "prompt": "Send an email to bob@example.com",
        "tool": "send_email", "tool_input": {"to": "bob@example.com"}, "step_id": "s3",
        "role": "writer"}
    EDIT: ClassVar[dict[str, Any]] = {
        "id": "p3", "kind": "input", "prompt": "Final title?", "step_id": "s4",
        "role": "editor"}

    def __init__(self, *, stale_reads: int = 0) -> None:
        self.open = [dict(self.RESEARCH), dict(self.WRITE)]
        self.later = [dict(self.EDIT)]
        self.answered: list[str] = []
        self.previous: dict[str, Any] | None = None
        self.stale = 0
        self.stale_reads = stale_reads
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        if self.open:
            return run_json("waiting_input", pending=self.open[0], pauses=list(self.open))
        return run_json("completed", output="done", finished_at=TS, pauses=[])

    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            if seen.method == "GET" and seen.path == "/v1/runs/ckrun1":
                if self.stale > 0 and self.previous is not None:
                    self.stale -= 1
                    return 200, {}, {"data": self.previous}
                return 200, {}, {"data": self.snapshot()}
            if seen.method == "POST" and seen.path == "/v1/runs/ckrun1/respond":
                wanted = seen.body.get("pause_id")
                pause = next((p for p in self.open if wanted in (None, p["id"])), None)
                if pause is None:
                    return error(409, "conflict_error", "That pause was already answered.")
                if (seen.body["action"] == "input") != (pause["kind"] == "input"):
                    return error(400, "invalid_request_error", "action does not match.")
                self.previous = self.snapshot()
                self.stale = self.stale_reads
                self.open.remove(pause)
                self.answered.append(pause["id"])
                if not self.open and self.later:
                    self.open, self.later = self.later, []
                status = "waiting_input" if self.open else "running"
                return 202, {}, {"data": {"id": "ckrun1", "status": status}}
            return error(404, "not_found_error", f"No route {seen.path}")


def test_poll_answers_every_open_pause_once_from_one_read() -> None:
    asked: list[tuple[str | None, str | None, int]] = []

    def decide(run: Run) -> str | loopllama.Decision:
        assert run.pending is not None and run.is_waiting
        asked.append((run.pending.id, run.pending.role, len(run.pauses)))
        if run.pending.kind == "input":
            return f"{run.pending.role}: short."
        return loopllama.approve()

    # Reads that lag the answers show pauses already answered: never answered again.
    stubbed = ParallelRun(stale_reads=2)
    with stub(stubbed) as (url, seen), LoopLlama("k", url) as client:
        run = client.runs.poll("ckrun1", interval=0.02, timeout=10, on_waiting_input=decide)
    assert run.status == "completed"
    # Each call is about its own pause, and sees every pause that was open with it.
    assert asked == [("p1", "researcher", 2), ("p2", "writer", 2), ("p3", "editor", 1)]
    assert responds(seen) == [
        {"action": "input", "input": "researcher: short.", "pause_id": "p1"},
        {"action": "approve", "pause_id": "p2"},
        {"action": "input", "input": "editor: short.", "pause_id": "p3"},
    ]
    assert stubbed.answered == ["p1", "p2", "p3"]
    # Both parallel pauses were answered from the same read, without waiting for another.
    calls = [("GET" if s.method == "GET" else s.body["pause_id"]) for s in seen]
    assert calls[:3] == ["GET", "p1", "p2"]


async def test_async_poll_none_defers_only_that_pause() -> None:
    asked: list[str | None] = []

    async def decide(run: Run) -> str | loopllama.Decision | None:
        assert run.pending is not None
        asked.append(run.pending.id)
        if run.pending.id == "p1" and asked.count("p1") == 1:
            return None  # the researcher's question: later
        if run.pending.kind == "input":
            return "Peer-reviewed only."
        return loopllama.reject("Not to Bob.")

    stubbed = ParallelRun()
    with stub(stubbed) as (url, seen):
        async with AsyncLoopLlama("k", url) as client:
            run = await client.runs.poll("ckrun1", interval=0.02, timeout=10,
                                         on_waiting_input=decide)
    assert run.status == "completed"
    # The writer was answered although the older researcher pause was put off.
    assert asked == ["p1", "p2", "p1", "p3"]
    assert stubbed.answered == ["p2", "p1", "p3"]
    assert [body["pause_id"] for body in responds(seen)] == ["p2", "p1", "p3"]
    assert responds(seen)[0] == {"action": "reject", "reason": "Not to Bob.",
                                 "pause_id": "p2"}


def test_respond_with_the_run_a_callback_got_names_its_pause() -> None:
    stubbed = ParallelRun()
    with stub(stubbed) as (url, seen), LoopLlama("k", url) as client:
        run = client.runs.get("ckrun1")
        assert [p.id for p in run.pauses] == ["p1", "p2"]
        writer = run.model_copy(update={"pending": run.pauses[1]})
        result = client.runs.approve(writer)
        assert (result.id, result.status) == ("ckrun1", "waiting_input")  # p1 still open
        with pytest.raises(ConflictError, match="already answered"):
            client.runs.respond("ckrun1", "approve", pause_id="p2")  # stale: 409
        client.runs.answer("ckrun1", "Oldest first.")  # no pause id: the oldest, p1
    assert responds(seen) == [
        {"action": "approve", "pause_id": "p2"},
        {"action": "approve", "pause_id": "p2"},
        {"action": "input", "input": "Oldest first."},
    ]
    assert stubbed.answered == ["p2", "p1"]


# --- MCP servers (HTTP stub) -------------------------------------------------------------

CRM_TOOLS = [
    {"name": "find_contact", "description": "Find a contact by email.",
     "input_schema": {"type": "object", "properties": {"email": {"type": "string"}}}},
    {"name": "update_contact", "description": "", "input_schema": {}},
]
CRM_SERVED = {"name": "crm", "url": "https://crm.example.com/mcp",
              "headers": {"Authorization": "env:CRM_TOKEN"}, "tools": CRM_TOOLS}
MCP_CREW = [{"role": "a", "model": "local/llama3.2", "tools": ["mcp__crm__find_contact"]}]


async def test_mcp_servers_are_sent_without_their_tools_and_read_back() -> None:
    served = workflow_json(crew=MCP_CREW, mcp_servers=[CRM_SERVED])
    with stub(scripted((201, {}, {"data": served}))) as (url, seen):
        with LoopLlama("k", url) as client:
            made = client.workflows.create(
                name="graph", crew=MCP_CREW,
                mcp_servers=[loopllama.McpServer(
                    name="crm", url="https://crm.example.com/mcp",
                    headers={"Authorization": "env:CRM_TOKEN"})],
                human_in_the_loop={"approval_required_tools": ["mcp__crm"]},
            )
            # A server read back (tools and all) can be sent again: its tools stay home.
            client.workflows.update("ckva1", mcp_servers=made.mcp_servers)
            client.workflows.update("ckva1", mcp_servers=[])
        async with AsyncLoopLlama("k", url) as async_client:
            await async_client.workflows.create(
                name="graph", crew=MCP_CREW,
                mcp_servers=[{"name": "crm", "url": "https://crm.example.com/mcp"}])
            await async_client.workflows.update(
                "ckva1", mcp_servers=[{**CRM_SERVED, "url": "https://crm2.example.com/mcp"}])
    crm = {"name": "crm", "url": "https://crm.example.com/mcp",
           "headers": {"Authorization": "env:CRM_TOKEN"}}
    assert [s.body for s in seen] == [
        {"name": "graph", "crew": MCP_CREW, "mcp_servers": [crm],
         "human_in_the_loop": {"approval_required_tools": ["mcp__crm"]}},
        {"mcp_servers": [crm]},
        {"mcp_servers": []},
        {"name": "graph", "crew": MCP_CREW,
         "mcp_servers": [{"name": "crm", "url": "https://crm.example.com/mcp"}]},
        {"mcp_servers": [{**crm, "url": "https://crm2.example.com/mcp"}]},
    ]
    assert [s.method for s in seen] == ["POST", "PATCH", "PATCH", "POST", "PATCH"]
    server = made.mcp_servers[0]
    assert isinstance(server, loopllama.McpServer)
    assert (server.name, server.url, server.headers) == (
        "crm", "https://crm.example.com/mcp", {"Authorization": "env:CRM_TOKEN"})
    assert [tool.name for tool in server.tools] == ["find_contact", "update_contact"]
    assert isinstance(server.tools[0], loopllama.McpTool)
    assert server.tools[0].input_schema["properties"] == {"email": {"type": "string"}}
    assert made.crew[0].model == "local/llama3.2"
    assert made.crew[0].tools == ["mcp__crm__find_contact"]


def test_mcp_servers_from_older_servers_and_in_update_errors() -> None:
    # An older server sends no mcp_servers; a server listed without tools reads as [].
    old = Workflow.model_validate(workflow_json())
    assert old.mcp_servers == []
    bare = Workflow.model_validate(workflow_json(mcp_servers=[
        {"name": "crm", "url": "https://crm.example.com/mcp", "extra": 1}]))
    assert bare.mcp_servers[0].tools == [] and bare.mcp_servers[0].headers == {}
    with LoopLlama("k", "http://127.0.0.1:1") as client:
        with pytest.raises(LoopLlamaError, match="mcp_servers"):
            client.workflows.update("ckva1")


# --- Forks (HTTP stub) -------------------------------------------------------------------


def step_json(n: int, role: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"ckstep{n}", "order": n - 1, "role": role, "model": "m", "input": "",
            "output": f"{role} output", "error": None, "tokens_in": 10, "tokens_out": 2,
            "started_at": TS, "finished_at": TS, **fields}


FORK_ORIGIN = {"run_id": "ckrun1", "step_id": "ckstep2",
               "forked_from": {"run_id": "ckrun0", "step_id": "ckstep9"}}


def forked(**fields: Any) -> Reply:
    return 202, {}, {"data": run_json("queued", id="ckrun2", forked_from=FORK_ORIGIN,
                                      **fields)}


async def test_fork_sends_only_what_is_given_sync_and_async() -> None:
    with stub(scripted(forked())) as (url, seen):
        with LoopLlama("k", url) as client:
            source = Run.model_validate(run_json("completed"))
            made = client.runs.fork(
                source, from_="critic",
                agents={"critic": {"instructions": "Be sharp.", "model": "m2"},
                        "editor": {"max_tokens": 500}},
                outputs={"writer": "By hand."}, input="New input.", tools="replay",
            )
            client.runs.fork("ckrun1", from_="writer")
        async with AsyncLoopLlama("k", url) as async_client:
            again = await async_client.runs.fork("ckrun1", from_="editor",
                                                 outputs={"writer": ""})
    assert [(s.method, s.path) for s in seen] == [("POST", "/v1/runs/ckrun1/fork")] * 3
    assert [s.body for s in seen] == [
        {"from": "critic",
         "agents": {"critic": {"instructions": "Be sharp.", "model": "m2"},
                    "editor": {"max_tokens": 500}},
         "outputs": {"writer": "By hand."}, "input": "New input.", "tools": "replay"},
        {"from": "writer"},
        {"from": "editor", "outputs": {"writer": ""}},
    ]
    # A fork is a new run: no Idempotency-Key, so it is not resent (see below).
    assert all("idempotency-key" not in s.headers for s in seen)
    for run in (made, again):
        assert isinstance(run, Run) and run.id == "ckrun2" and run.status == "queued"
        assert run.is_fork and isinstance(run.forked_from, loopllama.ForkOrigin)
        assert run.forked_from.run_id == "ckrun1" and run.forked_from.step_id == "ckstep2"
        assert run.forked_from.chain == ["ckrun1", "ckrun0"]
        assert run.forked_from.forked_from is not None
        assert run.forked_from.forked_from.forked_from is None


def test_fork_errors_and_no_resend_after_a_dropped_connection() -> None:
    busy = error(409, "conflict_error", "Run 'ckrun1' is running; only a run that has ended "
                 "(completed, failed or cancelled) can be forked.")
    with stub(scripted(busy)) as (url, seen), LoopLlama("k", url) as client:
        with pytest.raises(ConflictError, match="only a run that has ended"):
            client.runs.fork("ckrun1", from_="writer")
    assert len(seen) == 1
    refused = error(400, "invalid_request_error",
                    "from: the run's crew has no agent with role 'nobody'.")
    with stub(scripted(refused)) as (url, seen), LoopLlama("k", url) as client:
        with pytest.raises(BadRequestError, match="no agent with role 'nobody'"):
            client.runs.fork("ckrun1", from_="nobody")
    # A dropped connection may have started the fork: sending it again could start a
    # second one. Nor is a 503 retried (the fork may have been handed to Temporal).
    for reply in (DROP, UNAVAILABLE):
        with stub(scripted(reply, forked())) as (url, seen):
            with LoopLlama("k", url, max_retries=2) as client, pytest.raises(
                    (APIConnectionError, ServiceUnavailableError)):
                client.runs.fork("ckrun1", from_="writer")
        assert len(seen) == 1
    # A 429 means nothing was done: retried.
    limited = error(429, "rate_limit_error", "Slow down.", **{"Retry-After": "0"})
    with stub(scripted(limited, forked())) as (url, seen), LoopLlama("k", url) as client:
        assert client.runs.fork("ckrun1", from_="writer").id == "ckrun2"
    assert len(seen) == 2


def test_fork_steps_parse_and_older_servers_leave_them_unset() -> None:
    run = Run.model_validate(run_json("completed", id="ckrun2", forked_from=FORK_ORIGIN,
                                      steps=[
        step_json(1, "planner", reused_from="ckstepA"),
        step_json(2, "writer", edited=True, tokens_in=0, tokens_out=0),
        step_json(3, "editor", replay_misses=2),
    ]))
    planner, writer, editor = run.steps
    assert planner.reused_from == "ckstepA" and planner.is_reused and not planner.edited
    assert writer.edited and writer.reused_from is None and not writer.is_reused
    assert editor.replay_misses == 2 and editor.reused_from is None and not editor.edited
    # The keys are absent on steps and runs that are not forks (and from older servers).
    plain = Run.model_validate(run_json("completed", steps=[step_json(1, "planner")]))
    assert plain.forked_from is None and not plain.is_fork
    (step,) = plain.steps
    assert (step.reused_from, step.edited, step.replay_misses) == (None, False, None)
    # Dumped back, a fork's origin keeps its chain.
    dumped = run.model_dump(mode="json")
    assert dumped["forked_from"]["forked_from"]["run_id"] == "ckrun0"
    assert Run.model_validate(dumped) == run
