"""`loopllama runs watch/get/respond` and `workflows get` on crew graphs: parallel steps
and several open pauses.

The CLI runs in process (`run_client_command`) against a fake API on 127.0.0.1 (a
`ThreadingHTTPServer`): no Temporal and no worker. The fake run is a graph: the planner,
then the researcher and the writer at once (both pause), then the editor. It moves on as
it is read: by each GET when the event stream is refused (the CLI then polls), or by
its event stream as the CLI reads it.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cli.client_commands import add_client_commands, run_client_command

TS = "2026-05-20T17:10:00.000Z"
LATER = "2026-05-20T17:10:02.000Z"
MODEL = "loopllama-offline"
RESEARCH = {"id": "ckpause1", "kind": "input", "prompt": "Which sources?",
            "step_id": "ckstep2", "role": "researcher"}
WRITE = {"id": "ckpause2", "kind": "approval", "prompt": "Send an email to bob@example.com",
         "tool": "send_email", "tool_input": {"to": "bob@example.com"},
         "step_id": "ckstep3", "role": "writer"}
STREAM_DEADLINE = 20.0  # the fake stream gives up waiting for answers after this


# --- The fake API -----------------------------------------------------------------------


def step_json(n: int, role: str, *, done: bool) -> dict[str, Any]:
    return {"id": f"ckstep{n}", "order": n - 1, "role": role, "model": MODEL, "input": "",
            "output": f"{role} output" if done else None, "error": None,
            "tokens_in": 10 * n if done else 0, "tokens_out": n if done else 0,
            "started_at": TS, "finished_at": LATER if done else None}


class GraphRun:
    """Run ckrun1 of a crew graph, one phase at a time.

    0: the planner runs. 1: it is done; the researcher and the writer run. 2: both are
    paused (with `staggered`, only the researcher at first; the writer pauses the moment
    that is answered, and the stream tells nothing of it). 3: both are done; the editor
    runs. 4: completed. Phase 2 ends once every pause is answered.
    """

    def __init__(self, *, advance_on_get: bool, staggered: bool = False) -> None:
        self.advance_on_get = advance_on_get
        self.staggered = staggered
        self.phase = 0
        self.open: list[dict[str, Any]] = []
        self.later: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.responds: list[dict[str, Any]] = []
        self.paused_reads = 0  # GETs that showed an open pause
        self.changed = threading.Condition()
        self._tell("run.started", self.run_data())
        self._tell("step.started", self.steps()[0])

    def steps(self) -> list[dict[str, Any]]:
        phase = self.phase
        steps = [step_json(1, "planner", done=phase >= 1)]
        if phase >= 1:
            steps += [step_json(2, "researcher", done=phase >= 3),
                      step_json(3, "writer", done=phase >= 3)]
        if phase >= 3:
            steps.append(step_json(4, "editor", done=phase >= 4))
        return steps

    def run_data(self, *, with_steps: bool = False) -> dict[str, Any]:
        status = ("completed" if self.phase == 4 else
                  "waiting_input" if self.open else "running")
        return {
            "id": "ckrun1", "workflow_id": "ckva1", "status": status, "input": "Brief.",
            "output": "edited" if self.phase == 4 else None, "error": None,
            "total_steps": 4, "tokens_in": 0, "tokens_out": 0, "started_at": TS,
            "finished_at": LATER if self.phase == 4 else None, "created_at": TS,
            "pending": self.open[0] if self.open else None, "pauses": list(self.open),
            "steps": self.steps() if with_steps else [],
        }

    def _tell(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def advance(self) -> bool:
        """Move to the next phase if the run can; whether it did."""
        if self.phase == 0:
            self.phase = 1
            steps = self.steps()
            self._tell("step.completed", steps[0])
            self._tell("step.started", steps[1])
            self._tell("step.started", steps[2])
        elif self.phase == 1:
            self.phase = 2
            if self.staggered:
                self.open, self.later = [dict(RESEARCH)], [dict(WRITE)]
            else:
                self.open = [dict(RESEARCH), dict(WRITE)]
            self._tell("run.waiting_input", self.run_data())
        elif self.phase == 2 and not self.open and not self.later:
            self.phase = 3
            steps = self.steps()
            self._tell("run.resumed", self.run_data())
            self._tell("step.completed", steps[1])
            self._tell("step.completed", steps[2])
            self._tell("step.started", steps[3])
        elif self.phase == 3:
            self.phase = 4
            self._tell("step.completed", self.steps()[3])
            self._tell("run.completed", self.run_data())
        else:
            return False
        self.changed.notify_all()
        return True

    def until_paused(self) -> GraphRun:
        """Move the run on to where both agents are paused."""
        with self.changed:
            while self.phase < 2:
                self.advance()
        return self

    def get(self) -> dict[str, Any]:
        with self.changed:
            data = self.run_data(with_steps=True)
            if self.open:
                self.paused_reads += 1
                self.changed.notify_all()
            if self.advance_on_get:
                self.advance()
            return data

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.changed:
            self.responds.append(body)
            wanted = body.get("pause_id")
            pause = next((p for p in self.open if wanted in (None, p["id"])), None)
            if pause is None:
                return 409, {"error": {"type": "conflict_error",
                                       "message": "That pause was already answered."}}
            if (body["action"] == "input") != (pause["kind"] == "input"):
                return 400, {"error": {"type": "invalid_request_error",
                                       "message": "The action does not fit the pause."}}
            self.open.remove(pause)
            if not self.open and self.later:
                self.open, self.later = self.later, []  # the writer pauses right after
            self.changed.notify_all()
            status = "waiting_input" if self.open else "running"
            return 202, {"data": {"id": "ckrun1", "status": status}}

    def stream(self, write: Any) -> None:
        """Every event from the first, as the run makes them, until its end."""
        sent = 0
        deadline = time.monotonic() + STREAM_DEADLINE
        while True:
            with self.changed:
                while sent >= len(self.events) and not self.advance():
                    if not self.changed.wait(timeout=deadline - time.monotonic()):
                        return  # nobody answered: close the stream
                batch = list(enumerate(self.events[sent:], start=sent + 1))
                sent = len(self.events)
            for event_id, (kind, data) in batch:
                payload = {"type": kind, "run_id": "ckrun1", "created_at": TS, "data": data}
                write(f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(payload)}\n\n")
                if kind in ("run.completed", "run.failed", "run.cancelled"):
                    return


WORKFLOW = {
    "id": "ckva1", "name": "graph", "description": "", "status": "active",
    "human_in_the_loop": {}, "tools": [], "webhooks": [], "max_parallel": 2,
    "created_at": TS, "updated_at": TS,
    "crew": [
        {"role": "planner", "model": MODEL, "after": None},
        {"role": "researcher", "model": MODEL, "after": ["planner"]},
        {"role": "writer", "model": MODEL, "after": ["planner"], "tools": ["send_email"]},
        {"role": "editor", "model": MODEL, "after": ["researcher", "writer"]},
        {"role": "scout", "model": MODEL, "after": []},
    ],
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    run: GraphRun
    streams: bool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        run = self.server.run
        if self.path == "/v1/runs/ckrun1":
            self._json(200, {"data": run.get()})
        elif self.path == "/v1/workflows/ckva1":
            self._json(200, {"data": WORKFLOW})
        elif self.path == "/v1/runs/ckrun1/events" and self.server.streams:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def write(text: str) -> None:
                self.wfile.write(text.encode())
                self.wfile.flush()

            run.stream(write)
        else:
            self._json(404, {"error": {"type": "not_found_error",
                                       "message": f"No route {self.path}."}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        if self.path == "/v1/runs/ckrun1/respond":
            self._json(*self.server.run.respond(body))
        else:
            self._json(404, {"error": {"type": "not_found_error", "message": "No route."}})

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fake_api(run: GraphRun, *, streams: bool) -> Iterator[str]:
    """The fake API on 127.0.0.1 serving `run`; yields its base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.run, server.streams = run, streams
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- Running the CLI in process ---------------------------------------------------------


@dataclass
class Done:
    code: int
    out: str
    err: str


def cli(url: str, *argv: str, stdin: str = "") -> Done:
    """`loopllama ARGV` against `url`, in process."""
    parser = argparse.ArgumentParser(prog="loopllama")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--api-key", "k", "--base-url", url])
    out, err = io.StringIO(), io.StringIO()
    code = run_client_command(args, out, err, io.StringIO(stdin))
    assert "Traceback" not in err.getvalue()
    return Done(code, out.getvalue(), err.getvalue())


def step_done(n: int, role: str) -> str:
    return rf"✓ {n}\. {role}  {MODEL}  {10 * n}→{n} tokens  2\.0s"


def assert_graph_watched(done: Done) -> list[str]:
    """What every watch of the graph run shows: each step's start and end once, the two
    parallel steps both started before either ended, and the run's end."""
    assert done.code == 0, done
    lines = done.out.splitlines()
    starts = {role: lines.index(f"… {n}. {role}  {MODEL}  started")
              for n, role in enumerate(("planner", "researcher", "writer", "editor"), 1)}
    ends = {role: next(i for i, line in enumerate(lines) if re.fullmatch(step_done(n, role),
                                                                         line))
            for n, role in enumerate(("planner", "researcher", "writer", "editor"), 1)}
    for role in starts:
        assert sum(line.endswith(f"{role}  {MODEL}  started") for line in lines) == 1, done
        assert sum(bool(re.fullmatch(r"✓ \d\. " + role + ".*", line)) for line in lines) == 1
        assert starts[role] < ends[role], done
    # Two steps running at once are both visible.
    assert ends["planner"] < starts["researcher"] < starts["writer"] < ends["researcher"]
    assert max(ends["researcher"], ends["writer"]) < starts["editor"], done
    assert done.out.endswith("completed\n\nedited\n"), done
    return lines


PROMPTS = [
    "? The agent asks: Which sources?\n  agent: researcher\n",
    "! Approval needed: Send an email to bob@example.com\n  agent: writer\n"
    "  tool: send_email\n",
]
ANSWERS = [{"action": "input", "input": "Peer-reviewed only", "pause_id": "ckpause1"},
           {"action": "approve", "pause_id": "ckpause2"}]


# --- runs watch ------------------------------------------------------------------------


def test_watch_polls_parallel_steps_and_answers_both_open_pauses() -> None:
    run = GraphRun(advance_on_get=True)
    with fake_api(run, streams=False) as url:  # no stream: the CLI polls
        done = cli(url, "runs", "watch", "ckrun1", "--interval", "0.01",
                   stdin="Peer-reviewed only\ny\n")
    assert_graph_watched(done)
    assert "\n2 agents are waiting for you.\n" in done.out, done
    positions = [done.out.index(prompt) for prompt in PROMPTS]
    assert positions == sorted(positions), done  # oldest first
    # Each pause answered once, by its own id.
    assert run.responds == ANSWERS
    assert done.out.count("  sent: ") == 2


def test_watch_stream_prompts_for_a_pause_that_opens_while_another_is_open() -> None:
    # The writer pauses once the researcher is answered, with no event to tell it: the
    # watch reads the run again after answering and finds it.
    run = GraphRun(advance_on_get=False, staggered=True)
    with fake_api(run, streams=True) as url:
        done = cli(url, "runs", "watch", "ckrun1", "--interval", "0.01",
                   stdin="Peer-reviewed only\nn\nNot to Bob\n")
        assert_graph_watched(done)
        assert all(prompt in done.out for prompt in PROMPTS), done
        assert run.responds == [ANSWERS[0], {"action": "reject", "reason": "Not to Bob",
                                             "pause_id": "ckpause2"}]
        # Watching it again replays its past pauses: nothing is open, nothing is asked.
        again = cli(url, "runs", "watch", "ckrun1", stdin="")
    assert_graph_watched(again)
    assert "? The agent asks" not in again.out and "no input" not in again.out, again
    assert len(run.responds) == 2


def test_watch_json_keeps_stdout_for_the_run_and_asks_on_stderr() -> None:
    run = GraphRun(advance_on_get=True)
    with fake_api(run, streams=False) as url:
        done = cli(url, "runs", "watch", "ckrun1", "--json", "--interval", "0.01",
                   stdin="Peer-reviewed only\ny\n")
    assert done.code == 0, done
    final = json.loads(done.out)
    assert final["status"] == "completed" and len(final["steps"]) == 4
    assert all(prompt in done.err for prompt in PROMPTS), done
    assert run.responds == ANSWERS


def test_watch_with_stdin_closed_asks_once_and_keeps_watching() -> None:
    run = GraphRun(advance_on_get=True)
    with fake_api(run, streams=False) as url:
        answerer = threading.Thread(target=_answer_when_paused, args=(run,), daemon=True)
        answerer.start()
        done = cli(url, "runs", "watch", "ckrun1", "--interval", "0.01", stdin="")
        answerer.join(10)
    assert_graph_watched(done)
    hint = "(no input; still waiting — answer with `loopllama runs respond ckrun1`)"
    assert done.out.count(hint) == 1, done
    assert done.out.count("? The agent asks") == 1 and "Approval needed" not in done.out
    # Only the answers sent from elsewhere.
    assert [body["pause_id"] for body in run.responds] == ["ckpause1", "ckpause2"]


def _answer_when_paused(run: GraphRun) -> None:
    """Someone else answers both pauses, once the watch has read them again after giving
    up asking (so it had its chance to ask twice, and must not have)."""
    with run.changed:
        if not run.changed.wait_for(lambda: run.paused_reads >= 3, timeout=10):
            return
    run.respond({"action": "input", "input": "Elsewhere.", "pause_id": "ckpause1"})
    run.respond({"action": "approve", "pause_id": "ckpause2"})


# --- runs get, runs respond, workflows get ---------------------------------------------


def test_get_lists_every_open_pause_when_there_are_several() -> None:
    run = GraphRun(advance_on_get=False).until_paused()
    with fake_api(run, streams=False) as url:
        done = cli(url, "runs", "get", "ckrun1")
        assert done.code == 0, done
        assert done.out.splitlines()[-4:] == [
            "  waiting for you (2 open pauses, oldest first):",
            "    ckpause1  researcher  question: Which sources?",
            "    ckpause2  writer  approval of send_email: Send an email to bob@example.com",
            "  answer one with `loopllama runs respond ckrun1 --pause-id ID ...`",
        ], done
        lines = done.out.splitlines()
        assert lines[0] == "ckrun1  waiting_input  0→0 tokens"
        assert lines[2:4] == [f"  … 2. researcher  {MODEL}  0→0 tokens",
                              f"  … 3. writer  {MODEL}  0→0 tokens"], done

        run.respond({"action": "approve", "pause_id": "ckpause2"})
        one = cli(url, "runs", "get", "ckrun1")
    assert one.out.splitlines()[-1] == "  waiting for you: Which sources?", one
    assert "ckpause" not in one.out


def test_respond_sends_the_pause_id_it_is_given() -> None:
    run = GraphRun(advance_on_get=False).until_paused()
    with fake_api(run, streams=False) as url:
        done = cli(url, "runs", "respond", "ckrun1", "--approve", "--pause-id", "ckpause2")
        # The researcher's pause is still open, and the answer says so.
        assert (done.code, done.out) == (0, "ckrun1  waiting_input\n"), done
        stale = cli(url, "runs", "respond", "ckrun1", "--approve", "--pause-id", "ckpause2")
        assert stale.code == 1 and "HTTP 409" in stale.err, stale
        assert "already answered" in stale.err
        oldest = cli(url, "runs", "respond", "ckrun1", "--input", "Any.", "--json")
    assert oldest.code == 0 and json.loads(oldest.out)["status"] == "running", oldest
    assert run.responds == [{"action": "approve", "pause_id": "ckpause2"},
                            {"action": "approve", "pause_id": "ckpause2"},
                            {"action": "input", "input": "Any."}]


def test_respond_help_says_pause_id_picks_one_of_several(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="loopllama")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["runs", "respond", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--pause-id PAUSE_ID which open pause this answers, when several agents are " \
           "paused at once" in help_text, help_text
    assert "default: the oldest" in help_text


def test_workflows_get_shows_what_each_agent_waits_for() -> None:
    with fake_api(GraphRun(advance_on_get=False), streams=False) as url:
        done = cli(url, "workflows", "get", "ckva1")
    assert done.code == 0, done
    assert done.out.splitlines() == [
        "ckva1  graph  [active]",
        f"  1. planner  ({MODEL})",
        f"  2. researcher  ({MODEL})  after: planner",
        f"  3. writer  ({MODEL})  tools: send_email  after: planner",
        f"  4. editor  ({MODEL})  after: researcher, writer",
        f"  5. scout  ({MODEL})  after: (start)",
    ]
