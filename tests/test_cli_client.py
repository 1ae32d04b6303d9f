"""`loopllama workflows ...` and `loopllama runs ...` as real subprocesses.

The CLI is a separate process, so it talks to a real HTTP server: the app
(`create_app(settings)`, its own Temporal connection via its lifespan) under uvicorn on
127.0.0.1 in a background thread, with the test's worker on the session loop. Every
subprocess runs off the loop (`asyncio.to_thread` / `asyncio.create_subprocess_exec`)
so the worker keeps running, and every one has a timeout. Setup and checks of the
server-side state go straight to the HTTP API with httpx, which is quicker than the CLI.

Every invocation is checked for a Python traceback on stderr: the CLI must turn every
error into one `loopllama: ...` line and an exit code (0 ok/completed, 1 failed run or
API error, 2 usage).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopllama import Run, Workflow
from temporalio.client import Client

from cli.client_commands import _print_workflow
from core.settings import Settings
from tests.conftest import API_KEY, eventually, free_port
from tests.helpers import uvicorn_in_thread
from worker import build_worker

OFFLINE = "loopllama-offline"
REPO = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 60.0
FAST = "0.2"  # --interval for watch/--wait
STEP_LINE = r"✓ {n}\. {role}  {model}  (\d+)→(\d+) tokens  \d+\.\ds"
HITL_INPUT = "ask me about tone, then email bob@example.com the brief"


# --- Running the CLI ----------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any LOOPLLAMA_*/TEMPORAL_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLLAMA_", "TEMPORAL_"))}
    env.update(extra)
    return env


@dataclass
class Done:
    """A finished CLI invocation."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __repr__(self) -> str:
        return f"Done({self.args!r}, code={self.code}, out={self.out!r}, err={self.err!r})"


def _check_no_traceback(args: tuple[str, ...], err: str) -> None:
    assert "Traceback" not in err, f"loopllama {' '.join(args)} crashed:\n{err}"


async def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path = REPO,
    stdin: str | None = None,
    limit: float = CLI_TIMEOUT,
) -> Done:
    """`python -m cli.main ARGS` as a subprocess, off the event loop."""
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=limit,
    )
    _check_no_traceback(args, proc.stderr)
    return Done(args, proc.returncode, proc.stdout, proc.stderr)




@dataclass
class Server:
    """The API under uvicorn, the CLI pointed at it, and direct HTTP access to it."""

    url: str
    http: httpx.AsyncClient

    @property
    def env(self) -> dict[str, str]:
        return base_env(LOOPLLAMA_API_KEY=API_KEY, LOOPLLAMA_BASE_URL=self.url)

    async def cli(self, *args: str, stdin: str | None = None) -> Done:
        return await run_cli(*args, env=self.env, stdin=stdin)

    async def create(self, name: str, crew: list[dict[str, Any]],
                     hitl: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"name": name, "crew": crew}
        if hitl is not None:
            body["human_in_the_loop"] = hitl
        response = await self.http.post("/v1/workflows", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    async def trigger(self, workflow_id: str, text: str) -> str:
        response = await self.http.post(f"/v1/workflows/{workflow_id}/runs",
                                        json={"input": text})
        assert response.status_code in (201, 202), response.text
        return str(response.json()["data"]["id"])

    async def run(self, run_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def runs(self, workflow_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(f"/v1/workflows/{workflow_id}/runs")
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def until(self, run_id: str, *statuses: str, within: float = 30) -> dict[str, Any]:
        """The run once its status is one of `statuses`."""

        async def reached() -> dict[str, Any] | None:
            run = await self.run(run_id)
            return run if run["status"] in statuses else None

        return await eventually(reached, within=within, interval=0.1)

    async def respond(self, run_id: str, **body: Any) -> None:
        response = await self.http.post(f"/v1/runs/{run_id}/respond", json=body)
        assert response.status_code == 202, response.text


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    """The app served for this test (the test adds a worker when runs must progress)."""
    async with uvicorn_in_thread(settings) as url, httpx.AsyncClient(
        base_url=url, timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as http:
        yield Server(url, http)


def same_run(printed: dict[str, Any], served: dict[str, Any]) -> bool:
    """The CLI's JSON is the SDK's model dumped again: equal once parsed (timestamps are
    re-rendered with microseconds)."""
    return Run.model_validate(printed) == Run.model_validate(served)


def offline(*roles: str, **agent: Any) -> list[dict[str, Any]]:
    return [{"role": role, "model": OFFLINE, "instructions": f"You are the {role}.", **agent}
            for role in roles]


class Watcher:
    """A `loopllama runs watch` child whose stdout/stderr are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process, args: tuple[str, ...]) -> None:
        self.proc = proc
        self.args = args
        self.out = ""
        self.err = ""
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._pump(proc.stdout, "out")),
            asyncio.create_task(self._pump(proc.stderr, "err")),
        ]

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        while chunk := await stream.read(4096):
            setattr(self, name, getattr(self, name) + chunk.decode("utf-8", "replace"))

    async def saw(self, text: str, within: float = 30) -> None:
        async def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"watch exited early: {self.out!r} {self.err!r}")
            return text in self.out or text in self.err

        await eventually(seen, within=within)

    async def finish(self, within: float = 60) -> Done:
        try:
            code = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"watch did not end: {self.out!r} {self.err!r}") from None
        await asyncio.gather(*self._readers)
        _check_no_traceback(self.args, self.err)
        return Done(self.args, code, self.out, self.err)


async def start_watch(server: Server, *args: str, stdin: int | None) -> Watcher:
    argv = ("runs", "watch", *args)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", *argv,
        env=server.env, cwd=REPO, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    return Watcher(proc, argv)


# --- 1. Workflows ---------------------------------------------------------------------

JSON_CREW = {
    "name": "json crew",
    "description": "made from JSON",
    "crew": [
        {"role": "planner", "model": OFFLINE},
        {"role": "writer", "model": OFFLINE, "tools": ["send_email"]},
    ],
}

YAML_CREW = """\
# A crew in YAML, comments and all.
name: yaml crew
crew:
  - role: researcher
    model: loopllama-offline
    instructions: Find facts.
  - role: editor
    model: loopllama-offline
human_in_the_loop:
  allow_input_requests: true
"""


async def test_workflows_create_list_get_pause_resume_delete(
    server: Server, worker: Any, tmp_path: Path
) -> None:
    # (Pause, resume and delete are updates of the definition's workflow: a worker applies
    # them.)
    json_file = tmp_path / "crew.json"
    json_file.write_text(json.dumps(JSON_CREW))
    yaml_file = tmp_path / "crew.yaml"
    yaml_file.write_text(YAML_CREW)

    made = await server.cli("workflows", "create", "-f", str(json_file))
    assert made.code == 0, made
    match = re.fullmatch(r"created (ckva\w+)  json crew\n", made.out)
    assert match, made
    json_id = match.group(1)

    made = await server.cli("workflows", "create", "-f", str(yaml_file), "--json")
    assert made.code == 0, made
    created = json.loads(made.out)
    yaml_id = created["id"]
    assert yaml_id.startswith("ckva") and created["name"] == "yaml crew"
    assert [a["role"] for a in created["crew"]] == ["researcher", "editor"]
    assert created["crew"][0]["instructions"] == "Find facts."
    assert created["human_in_the_loop"]["allow_input_requests"] is True
    assert created["status"] == "active"

    # `-f -` reads JSON from stdin.
    made = await server.cli("workflows", "create", "-f", "-", "--json",
                            stdin=json.dumps({"name": "stdin crew", "crew": offline("solo")}))
    assert made.code == 0, made
    stdin_id = json.loads(made.out)["id"]

    listed = await server.cli("workflows", "list")
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    yaml_line = f"{yaml_id}  active  yaml crew  (researcher → editor)"
    json_line = f"{json_id}  active  json crew  (planner → writer)"
    assert yaml_line in lines and json_line in lines, listed
    assert lines.index(yaml_line) < lines.index(json_line)  # newest first

    listed = await server.cli("workflows", "list", "--json")
    assert listed.code == 0, listed
    ids = [w["id"] for w in json.loads(listed.out)]
    assert ids.index(stdin_id) < ids.index(yaml_id) < ids.index(json_id)

    got = await server.cli("workflows", "get", json_id)
    assert got.code == 0, got
    assert got.out.splitlines() == [
        f"{json_id}  json crew  [active]",
        "  made from JSON",
        f"  1. planner  ({OFFLINE})",
        f"  2. writer  ({OFFLINE})  tools: send_email",
    ]
    got = await server.cli("workflows", "get", yaml_id, "--json")
    assert got.code == 0 and json.loads(got.out) == created, got

    paused = await server.cli("workflows", "pause", json_id)
    assert paused.code == 0 and f"{json_id}  json crew  [paused]" in paused.out, paused
    got = await server.cli("workflows", "get", json_id, "--json")
    assert got.code == 0 and json.loads(got.out)["status"] == "paused", got
    refused = await server.cli("runs", "trigger", json_id, "x")
    assert refused.code == 1 and "HTTP 409" in refused.err and "resume" in refused.err, refused

    resumed = await server.cli("workflows", "resume", json_id, "--json")
    assert resumed.code == 0 and json.loads(resumed.out)["status"] == "active", resumed
    got = await server.cli("workflows", "get", json_id)
    assert got.code == 0 and "[active]" in got.out.splitlines()[0], got

    deleted = await server.cli("workflows", "delete", json_id)
    assert deleted.code == 0 and deleted.out == f"deleted {json_id}\n", deleted
    deleted = await server.cli("workflows", "delete", stdin_id, "--json")
    assert deleted.code == 0 and json.loads(deleted.out) == {"id": stdin_id, "deleted": True}

    gone = await server.cli("workflows", "get", json_id)
    assert gone.code == 1 and gone.out == "", gone
    assert gone.err.startswith("loopllama: ")
    assert f"No workflow with id {json_id!r}" in gone.err and "HTTP 404" in gone.err, gone
    gone = await server.cli("workflows", "pause", "ckva-nope")
    assert gone.code == 1 and "HTTP 404" in gone.err, gone


def test_workflow_summary_shows_mcp_servers_and_their_tool_counts() -> None:
    # (No real MCP server needed: the summary is printed from the API's answer.)
    tool = {"name": "find", "description": "", "input_schema": {}}
    workflow = Workflow.model_validate({
        "id": "ckva1", "name": "crm crew", "status": "active",
        "created_at": "2026-05-20T17:10:00.000Z", "updated_at": "2026-05-20T17:10:00.000Z",
        "crew": [{"role": "a", "model": "local/llama3.2", "tools": ["mcp__crm"]}],
        "mcp_servers": [
            {"name": "crm", "url": "https://crm.example.com/mcp",
             "headers": {"Authorization": "env:CRM_TOKEN"},
             "tools": [tool, {**tool, "name": "update"}]},
            {"name": "issues", "url": "https://issues.example.com/mcp", "tools": [tool]},
        ],
    })
    out = io.StringIO()
    _print_workflow(workflow, out)
    assert out.getvalue().splitlines() == [
        "ckva1  crm crew  [active]",
        "  1. a  (local/llama3.2)  tools: mcp__crm",
        "  mcp servers: crm (2 tools), issues (1 tool)",
    ]


# --- 2. Invalid crew files ------------------------------------------------------------


async def test_create_with_bad_files(server: Server, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    done = await server.cli("workflows", "create", "-f", str(missing))
    assert done.code == 2 and str(missing) in done.err and "cannot read" in done.err, done

    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "broken", "crew": [')
    done = await server.cli("workflows", "create", "-f", str(bad_json))
    assert done.code == 2 and str(bad_json) in done.err, done
    assert "not valid json" in done.err.lower(), done

    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("name: broken\ncrew: [unclosed\n")
    done = await server.cli("workflows", "create", "-f", str(bad_yaml))
    assert done.code == 2 and str(bad_yaml) in done.err, done
    assert "not valid yaml" in done.err.lower(), done

    a_list = tmp_path / "list.yaml"
    a_list.write_text("- role: planner\n  model: loopllama-offline\n")
    done = await server.cli("workflows", "create", "-f", str(a_list))
    assert done.code == 2 and str(a_list) in done.err and "one object" in done.err, done

    no_such = tmp_path / "rejected.json"
    no_such.write_text(json.dumps({"name": "rejected",
                                   "crew": [{"role": "a", "model": "gpt-4o"}]}))
    done = await server.cli("workflows", "create", "-f", str(no_such))
    assert done.code == 1 and done.out == "", done
    assert "unknown model 'gpt-4o'" in done.err and "HTTP 400" in done.err, done

    listed = await server.cli("workflows", "list", "--json")
    assert not {"broken", "rejected"} & {w["name"] for w in json.loads(listed.out)}


# --- 3. Triggering, listing, reading and waiting for runs ------------------------------


async def test_runs_trigger_list_get_and_wait(server: Server, worker: Any) -> None:
    workflow_id = await server.create("two", offline("planner", "writer"))

    first = await server.cli("runs", "trigger", workflow_id, "Draft a brief.")
    assert first.code == 0, first
    match = re.fullmatch(r"(ckrun\w+)  queued\n", first.out)
    assert match, first
    first_id = match.group(1)

    second = await server.cli("runs", "trigger", workflow_id, "Another one.", "--json")
    assert second.code == 0, second
    queued = json.loads(second.out)
    assert (queued["status"], queued["workflow_id"], queued["input"]) == (
        "queued", workflow_id, "Another one.")
    second_id = queued["id"]

    first_run = await server.until(first_id, "completed")
    await server.until(second_id, "completed")

    async def both_listed() -> bool:
        return [r["id"] for r in await server.runs(workflow_id)] == [second_id, first_id]

    await eventually(both_listed)
    listed = await server.cli("runs", "list", workflow_id)
    assert listed.code == 0, listed
    lines = listed.out.splitlines()
    assert [line.split()[0] for line in lines] == [second_id, first_id], listed
    assert all(re.fullmatch(r"ckrun\w+  completed      2 steps  \d+→\d+ tokens  "
                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line) for line in lines), listed
    listed = await server.cli("runs", "list", workflow_id, "--json")
    assert listed.code == 0, listed
    assert [r["id"] for r in json.loads(listed.out)] == [second_id, first_id]

    got = await server.cli("runs", "get", first_id)
    assert got.code == 0, got
    head, *steps = got.out.split("\n\n", 1)[0].splitlines()
    assert head == (f"{first_id}  completed  {first_run['tokens_in']}→"
                    f"{first_run['tokens_out']} tokens"), got
    assert len(steps) == 2
    for n, (line, step) in enumerate(zip(steps, first_run["steps"], strict=True), start=1):
        found = re.fullmatch("  " + STEP_LINE.format(n=n, role=step["role"], model=OFFLINE),
                             line)
        assert found and found.groups() == (str(step["tokens_in"]), str(step["tokens_out"]))
    assert got.out.endswith(f"\n\n{first_run['output']}\n"), got
    got = await server.cli("runs", "get", first_id, "--json")
    assert got.code == 0 and same_run(json.loads(got.out), first_run), got

    waited = await server.cli("runs", "trigger", workflow_id, "Third, waited for.",
                              "--wait", "--interval", FAST)
    assert waited.code == 0, waited
    newest = (await server.runs(workflow_id))[0]
    assert newest["input"] == "Third, waited for."
    run = await server.run(newest["id"])
    assert run["status"] == "completed"
    lines = waited.out.splitlines()
    # The run's id first, so it can be looked up later; then a line as each step starts
    # and one as it finishes.
    assert lines[0] == f"{newest['id']}  queued", waited
    for n, step in enumerate(run["steps"], start=1):
        assert lines[2 * n - 1] == f"… {n}. {step['role']}  {OFFLINE}  started", waited
        found = re.fullmatch(STEP_LINE.format(n=n, role=step["role"], model=OFFLINE),
                             lines[2 * n])
        assert found, waited
        assert found.groups() == (str(step["tokens_in"]), str(step["tokens_out"]))
    assert lines[5] == "completed", waited
    assert waited.out.endswith(f"completed\n\n{run['output']}\n"), waited
    assert "You are the writer." in run["output"]

    waited = await server.cli("runs", "trigger", workflow_id, "Fourth.", "--wait", "--json",
                              "--interval", FAST)
    assert waited.code == 0, waited
    final = json.loads(waited.out)
    assert final["status"] == "completed" and len(final["steps"]) == 2
    assert final["input"] == "Fourth."

    missing = await server.cli("runs", "get", "ckrun000000000000000000000")
    assert missing.code == 1 and "HTTP 404" in missing.err, missing


async def test_a_failed_run_exits_1(server: Server, temporal: Client, settings: Settings) -> None:
    # A Claude model on a worker without ANTHROPIC_API_KEY fails the run, deterministically.
    keyless = replace(settings, anthropic_api_key=None)
    workflow_id = await server.create("claude", [
        {"role": "writer", "model": "claude-sonnet-4-6", "instructions": "Write."}])
    async with build_worker(temporal, keyless):
        waited = await server.cli("runs", "trigger", workflow_id, "Write.", "--wait",
                                  "--interval", FAST)
        assert waited.code == 1, waited
        (listed,) = await server.runs(workflow_id)
        run = await server.run(listed["id"])
        assert run["status"] == "failed" and "needs ANTHROPIC_API_KEY" in run["error"]
        assert f"failed: {run['error']}" in waited.out.splitlines(), waited

        got = await server.cli("runs", "get", run["id"])
        assert got.code == 1, got
        assert got.out.startswith(f"{run['id']}  failed  ") and "needs ANTHROPIC_API_KEY" in got.out
        assert f"  error: {run['error']}" in got.out.splitlines(), got

        watched = await server.cli("runs", "watch", run["id"], "--json")
        assert watched.code == 1, watched
        assert json.loads(watched.out)["status"] == "failed"

        got = await server.cli("runs", "get", run["id"], "--json")
        assert got.code == 1 and json.loads(got.out)["status"] == "failed", got


async def test_cancel_and_retry(server: Server, temporal: Client, settings: Settings) -> None:
    workflow_id = await server.create("claude", [
        {"role": "writer", "model": "claude-sonnet-4-6", "instructions": "Write."}])
    async with build_worker(temporal, replace(settings, anthropic_api_key=None)):
        failed = await server.cli("runs", "trigger", workflow_id, "Write.", "--wait",
                                  "--interval", FAST)
    assert failed.code == 1, failed
    (listed,) = await server.runs(workflow_id)
    async with build_worker(temporal, settings):
        retried = await server.cli("runs", "retry", listed["id"])
        assert retried.code == 0 and retried.out.startswith(f"{listed['id']}  "), retried
        watched = await server.cli("runs", "watch", listed["id"], "--interval", FAST)
        assert watched.code == 0 and "completed" in watched.out.splitlines(), watched
        again = await server.cli("runs", "retry", listed["id"])
        assert again.code == 1 and "only a failed run" in again.err, again

        asker = await server.create("ask", offline("asker"), {"allow_input_requests": True})
        paused_id = await server.trigger(asker, "ask me about tone")
        await server.until(paused_id, "waiting_input")
        cancelled = await server.cli("runs", "cancel", paused_id)
        assert cancelled.out.strip() == f"{paused_id}  cancelled", cancelled
        got = await server.cli("runs", "get", paused_id)
        assert got.code == 1 and got.out.startswith(f"{paused_id}  cancelled"), got


# --- 4. Answering paused runs with `runs respond` --------------------------------------


async def test_respond_to_a_question(server: Server, worker: Any) -> None:
    workflow_id = await server.create("asks", offline("assistant"),
                                      {"allow_input_requests": True})
    run_id = await server.trigger(workflow_id, "ask me about tone")
    paused = await server.until(run_id, "waiting_input")
    assert paused["pending"]["kind"] == "input"

    wrong = await server.cli("runs", "respond", run_id, "--approve")
    assert wrong.code == 1 and "HTTP 400" in wrong.err, wrong
    assert "waiting for an answer to a question" in wrong.err, wrong

    usage = await server.cli("runs", "respond", run_id, "--approve", "--reason", "no")
    assert usage.code == 2 and "--reason goes with --reject" in usage.err, usage
    usage = await server.cli("runs", "respond", run_id, "--input", "x", "--reason", "no")
    assert usage.code == 2 and "--reason goes with --reject" in usage.err, usage
    usage = await server.cli("runs", "respond", run_id)
    assert usage.code == 2 and "--input" in usage.err and "required" in usage.err, usage
    usage = await server.cli("runs", "respond", run_id, "--input", "x", "--approve")
    assert usage.code == 2 and "not allowed with" in usage.err, usage
    assert (await server.run(run_id))["status"] == "waiting_input"  # nothing was sent

    answered = await server.cli("runs", "respond", run_id, "--input", "Friendly, please.")
    assert answered.code == 0, answered
    match = re.fullmatch(rf"{run_id}  (\w+)\n", answered.out)
    assert match and match.group(1) != "waiting_input", answered

    run = await server.until(run_id, "completed")
    assert "Friendly, please." in run["output"]

    late = await server.cli("runs", "respond", run_id, "--input", "too late")
    assert late.code == 1 and "HTTP 409" in late.err, late
    assert f"Run {run_id!r} is completed, not waiting_input" in late.err, late


async def test_respond_approve_and_reject(server: Server, worker: Any) -> None:
    workflow_id = await server.create("emails", offline("assistant", tools=["send_email"]),
                                      {"approval_required_tools": ["send_email"]})
    approved_id = await server.trigger(workflow_id, "email bob@example.com the brief")
    rejected_id = await server.trigger(workflow_id, "email bob@example.com the brief")
    for run_id in (approved_id, rejected_id):
        paused = await server.until(run_id, "waiting_input")
        assert paused["pending"]["kind"] == "approval"
        assert paused["pending"]["tool"] == "send_email"

    wrong = await server.cli("runs", "respond", approved_id, "--input", "yes")
    assert wrong.code == 1 and "HTTP 400" in wrong.err, wrong
    assert "waiting for approval of send_email" in wrong.err, wrong

    approved = await server.cli("runs", "respond", approved_id, "--approve", "--json")
    assert approved.code == 0, approved
    result = json.loads(approved.out)
    assert result["id"] == approved_id and result["status"] != "waiting_input"

    rejected = await server.cli("runs", "respond", rejected_id, "--reject", "--reason",
                                "Not to Bob")
    assert rejected.code == 0 and rejected.out.startswith(f"{rejected_id}  "), rejected

    run = await server.until(approved_id, "completed")
    # Approved, so the tool ran (this worker has no SMTP, which the tool result says).
    assert "send_email is not configured" in run["output"]
    run = await server.until(rejected_id, "completed")
    assert "declined this send_email call" in run["output"]
    assert "Reason: Not to Bob" in run["output"]

    late = await server.cli("runs", "respond", rejected_id, "--reject")
    assert late.code == 1 and "HTTP 409" in late.err, late


# --- 5/6. Watching a run -------------------------------------------------------------


async def test_watch_answers_pauses_at_its_prompt(server: Server, worker: Any) -> None:
    workflow_id = await server.create(
        "hitl", offline("assistant", tools=["send_email"]),
        {"allow_input_requests": True, "approval_required_tools": ["send_email"]},
    )
    run_id = await server.trigger(workflow_id, HITL_INPUT)
    watcher = await start_watch(server, run_id, "--interval", FAST,
                                stdin=asyncio.subprocess.PIPE)
    assert watcher.proc.stdin is not None
    # A blank answer and an unclear decision are asked again.
    watcher.proc.stdin.write(b"\nFriendly\nmaybe\nn\nNot to Bob\n")
    await watcher.proc.stdin.drain()
    watcher.proc.stdin.close()
    done = await watcher.finish()
    assert done.code == 0, done

    run = await server.run(run_id)
    assert run["status"] == "completed"
    out = done.out
    question = "? The agent asks: Before I start on “ask me about tone, then email"
    assert question in out, done
    assert out.count("> ") >= 2  # asked again after the blank line
    assert "! Approval needed: " in out and "  tool: send_email\n" in out, done
    arguments = re.search(r"  arguments: (\{.*\})\n", out)
    assert arguments, done
    tool_input = json.loads(arguments.group(1))
    assert tool_input["to"] == "bob@example.com" and tool_input["subject"]
    assert out.count("Approve? [y/n] ") == 2  # "maybe" is not an answer
    assert "Reason (optional): " in out
    order = [out.index(text) for text in (question, "sent: input", "! Approval needed",
                                          "sent: reject")]
    assert order == sorted(order), done
    (step,) = run["steps"]
    assert re.search("^" + STEP_LINE.format(n=1, role="assistant", model=OFFLINE) + "$", out,
                     re.MULTILINE), done
    assert f"\ncompleted\n\n{run['output']}\n" in out, done
    # Both answers reached the model: it quotes the tool results.
    assert "Tool result: Friendly" in run["output"]
    assert "Reason: Not to Bob" in run["output"]


async def test_watch_with_stdin_closed_keeps_watching(server: Server, worker: Any) -> None:
    workflow_id = await server.create("asks", offline("assistant"),
                                      {"allow_input_requests": True})
    run_id = await server.trigger(workflow_id, "ask me about tone")
    watcher = await start_watch(server, run_id, "--interval", FAST,
                                stdin=asyncio.subprocess.DEVNULL)
    hint = f"(no input; still waiting — answer with `loopllama runs respond {run_id}`)"
    await watcher.saw(hint)
    assert watcher.proc.returncode is None  # still watching
    await server.respond(run_id, action="input", input="Formal.")
    done = await watcher.finish()
    assert done.code == 0, done
    assert "? The agent asks: " in done.out and hint in done.out
    assert done.out.count(hint) == 1
    run = await server.run(run_id)
    assert run["status"] == "completed" and "Formal." in run["output"]
    assert done.out.endswith(f"completed\n\n{run['output']}\n"), done


async def test_watch_json_prints_the_final_run(server: Server, worker: Any) -> None:
    workflow_id = await server.create("solo", offline("writer"))
    run_id = await server.trigger(workflow_id, "Write it.")
    done = await server.cli("runs", "watch", run_id, "--json", "--interval", FAST)
    assert done.code == 0, done
    final = json.loads(done.out)
    assert same_run(final, await server.run(run_id))
    assert final["status"] == "completed" and len(final["steps"]) == 1
    assert final["steps"][0]["output"] == final["output"]
    # Watching a finished run returns at once, the same way.
    again = await server.cli("runs", "watch", run_id, "--json")
    assert again.code == 0 and json.loads(again.out) == final, again
    again = await server.cli("runs", "watch", run_id)
    assert again.code == 0 and again.out.endswith(f"completed\n\n{final['output']}\n"), again


async def test_watch_json_stdout_stays_json_through_a_pause(
    server: Server, worker: Any
) -> None:
    workflow_id = await server.create("asks", offline("assistant"),
                                      {"allow_input_requests": True})
    run_id = await server.trigger(workflow_id, "ask me about tone")
    watcher = await start_watch(server, run_id, "--json", "--interval", FAST,
                                stdin=asyncio.subprocess.DEVNULL)
    await watcher.saw("no input")  # on stdout or stderr
    await server.respond(run_id, action="input", input="Formal.")
    done = await watcher.finish()
    assert done.code == 0, done
    assert json.loads(done.out)["status"] == "completed", done


# --- 7. API key, base URL and connection errors --------------------------------------


async def test_api_key_and_base_url_resolution(server: Server, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    keyless = base_env(LOOPLLAMA_BASE_URL=server.url)

    done = await run_cli("workflows", "list", env=keyless, cwd=empty)
    assert done.code == 1 and done.out == "", done
    assert done.err.startswith("loopllama: ") and "LOOPLLAMA_API_KEY" in done.err, done

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api-key").write_text(API_KEY + "\n")
    done = await run_cli("workflows", "list", "--json", env={
        **keyless, "LOOPLLAMA_DATA_DIR": str(data_dir)}, cwd=empty)
    assert done.code == 0 and isinstance(json.loads(done.out), list), done

    # Without LOOPLLAMA_DATA_DIR: the key `loopllama dev` keeps in ./.loopllama.
    project = tmp_path / "project"
    (project / ".loopllama").mkdir(parents=True)
    (project / ".loopllama" / "api-key").write_text(API_KEY)
    done = await run_cli("workflows", "list", env=keyless, cwd=project)
    assert done.code == 0, done

    wrong = {**keyless, "LOOPLLAMA_API_KEY": "not-the-key"}
    done = await run_cli("workflows", "list", env=wrong, cwd=empty)
    assert done.code == 1 and done.out == "", done
    assert "Invalid API key" in done.err and "HTTP 401" in done.err, done
    assert "not-the-key" not in done.err

    # --api-key beats the environment, both ways.
    done = await run_cli("workflows", "list", "--api-key", API_KEY, env=wrong, cwd=empty)
    assert done.code == 0, done
    done = await run_cli("runs", "get", "ckrun0", "--api-key", "nope", env=server.env)
    assert done.code == 1 and "HTTP 401" in done.err, done

    # --base-url beats LOOPLLAMA_BASE_URL; the /v1 that `loopllama dev` prints is accepted.
    dead = f"http://127.0.0.1:{free_port()}"
    env = base_env(LOOPLLAMA_API_KEY=API_KEY, LOOPLLAMA_BASE_URL=dead)
    done = await run_cli("workflows", "list", "--base-url", server.url + "/v1", env=env)
    assert done.code == 0, done

    started = time.monotonic()
    done = await run_cli("workflows", "list", env=env)
    assert done.code == 1 and done.out == "", done
    assert "Could not reach the LoopLlama API" in done.err, done
    assert time.monotonic() - started < 15  # a couple of quick retries, then gives up

    done = await run_cli("runs", "watch", "ckrun0", "--base-url", "ftp://example", env=env)
    assert done.code == 1 and "http://" in done.err, done


# --- Bugs found by these tests (fixed) --------------------------------------------------


async def test_create_from_a_file_that_is_not_utf8(server: Server, tmp_path: Path) -> None:
    binary = tmp_path / "crew.json"
    binary.write_bytes(b"\xff\xfe{\x00}\x00")
    done = await server.cli("workflows", "create", "-f", str(binary))
    assert done.code == 2 and str(binary) in done.err, done


async def test_create_from_yaml_with_a_date_value(server: Server, tmp_path: Path) -> None:
    spec = tmp_path / "dated.yaml"
    spec.write_text("name: 2024-05-01\ncrew:\n  - role: writer\n    model: loopllama-offline\n")
    done = await server.cli("workflows", "create", "-f", str(spec))
    assert done.code in (0, 2), done
    if done.code == 2:
        assert str(spec) in done.err, done


async def _paused_watch(server: Server, *args: str) -> tuple[str, Watcher]:
    workflow_id = await server.create("asks", offline("assistant"),
                                      {"allow_input_requests": True})
    run_id = await server.trigger(workflow_id, "ask me about tone")
    await server.until(run_id, "waiting_input")
    watcher = await start_watch(server, run_id, *args, stdin=asyncio.subprocess.DEVNULL)
    return run_id, watcher


async def test_watch_with_a_negative_interval_is_a_usage_error(
    server: Server, worker: Any
) -> None:
    _, watcher = await _paused_watch(server, "--interval", "-1")
    done = await watcher.finish(within=30)
    assert done.code == 2 and "interval" in done.err, done


async def test_ctrl_c_stops_watch_quietly(server: Server, worker: Any) -> None:
    run_id, watcher = await _paused_watch(server, "--interval", FAST)
    await watcher.saw("no input; still waiting")
    watcher.proc.send_signal(signal.SIGINT)
    done = await watcher.finish(within=20)
    assert done.code == 130, done
    assert (await server.run(run_id))["status"] == "waiting_input"  # the run goes on
