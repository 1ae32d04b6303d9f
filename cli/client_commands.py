"""`loopllama workflows ...` and `loopllama runs ...`: the API from the command line.

`runs fork` and `runs compare` live in cli/fork_commands.py.

Built on the Python SDK. Every command takes `--json` for scripts. Exit codes: 0 done
(for runs: completed), 1 failed (a failed or cancelled run, or an error from the API),
2 usage.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from loopllama import LoopLlama
from loopllama.errors import (
    APIConnectionError,
    APIStatusError,
    ConflictError,
    LoopLlamaError,
)
from loopllama.types import Pending, Run, Step
from pydantic import BaseModel

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class UsageError(Exception):
    """The command line is wrong; exit 2 with this message."""


def add_client_commands(commands: Any) -> None:
    """Register `workflows` and `runs` on the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")
    common.add_argument("--api-key", help="default: LOOPLLAMA_API_KEY, else the key "
                        "`loopllama dev` keeps in LOOPLLAMA_DATA_DIR")
    common.add_argument("--base-url", help="default: LOOPLLAMA_BASE_URL or "
                        "http://127.0.0.1:8000")

    workflows = commands.add_parser("workflows", help="Create and manage workflows (crews).")
    wf = workflows.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = wf.add_parser("create", parents=[common], help="Create from a JSON/YAML file.")
    create.add_argument("-f", "--file", required=True, type=Path,
                        help="crew definition (.json, .yaml or .yml; - for stdin JSON): "
                             "name, crew, and any other field of the API's body, such "
                             "as mcp_servers")
    wf.add_parser("list", parents=[common], help="List workflows, newest first.")
    for action, text in (("get", "Show one workflow."), ("pause", "Refuse new runs."),
                         ("resume", "Accept new runs again."), ("delete", "Delete it.")):
        sub = wf.add_parser(action, parents=[common], help=text)
        sub.add_argument("workflow_id", metavar="WORKFLOW_ID")

    runs = commands.add_parser("runs", help="Trigger, inspect and answer runs.")
    rn = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    trigger = rn.add_parser("trigger", parents=[common], help="Start a run.")
    trigger.add_argument("workflow_id", metavar="WORKFLOW_ID")
    trigger.add_argument("input", metavar="INPUT", help="the task for the crew")
    trigger.add_argument("--wait", action="store_true",
                         help="watch the run until it completes or fails")
    trigger.add_argument("--interval", type=_positive_seconds, default=1.0,
                         help="with --wait: seconds between polls (default 1)")
    listing = rn.add_parser("list", parents=[common], help="A workflow's 50 newest runs.")
    listing.add_argument("workflow_id", metavar="WORKFLOW_ID")
    get = rn.add_parser("get", parents=[common], help="One run with its steps.")
    get.add_argument("run_id", metavar="RUN_ID")
    respond = rn.add_parser("respond", parents=[common], help="Answer a paused run.")
    respond.add_argument("run_id", metavar="RUN_ID")
    choice = respond.add_mutually_exclusive_group(required=True)
    choice.add_argument("--input", dest="answer", help="the answer to the agent's question")
    choice.add_argument("--approve", action="store_true", help="approve the pending action")
    choice.add_argument("--reject", action="store_true", help="decline the pending action")
    respond.add_argument("--reason", help="with --reject: why, passed back to the agent")
    respond.add_argument("--pause-id",
                         help="which open pause this answers, when several agents are "
                              "paused at once (their ids: `runs get`); default: the "
                              "oldest (pending.id). Refused (409) once that pause was "
                              "answered")
    cancel = rn.add_parser("cancel", parents=[common], help="Cancel a run that has not ended.")
    cancel.add_argument("run_id", metavar="RUN_ID")
    retry = rn.add_parser("retry", parents=[common],
                          help="Go on with a failed run from its failed step.")
    retry.add_argument("run_id", metavar="RUN_ID")
    watch = rn.add_parser("watch", parents=[common],
                          help="Follow a run live, answering pauses at a prompt.")
    watch.add_argument("run_id", metavar="RUN_ID")
    watch.add_argument("--interval", type=_positive_seconds, default=1.0,
                       help="seconds between polls (default 1)")
    # (Imported here: cli.fork_commands builds on this module's helpers.)
    from cli.fork_commands import add_fork_commands

    add_fork_commands(rn, common)


def run_client_command(args: argparse.Namespace, out: TextIO = sys.stdout,
                       err: TextIO = sys.stderr, stdin: TextIO = sys.stdin) -> int:
    """Execute a `workflows`/`runs` command; returns the exit code."""
    try:
        # Everything the command line alone can get wrong, before any request.
        spec = _load_spec(args.file) if getattr(args, "file", None) is not None else None
        if getattr(args, "reason", None) is not None and not args.reject:
            raise UsageError("--reason goes with --reject")
        if args.command == "runs" and args.action == "fork":
            from cli.fork_commands import check_fork_args

            args.fork_edits = check_fork_args(args)
        with _client(args) as client:
            if args.command == "workflows":
                return _workflows(client, args, spec, out)
            return _runs(client, args, out, err, stdin)
    except UsageError as error:
        print(f"loopllama: {error}", file=err)
        return EXIT_USAGE
    except LoopLlamaError as error:
        print(f"loopllama: {error}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the interval must be more than 0 seconds")
    return value


def _client(args: argparse.Namespace) -> LoopLlama:
    key = args.api_key or os.environ.get("LOOPLLAMA_API_KEY", "").strip()
    if not key:
        # `loopllama dev` keeps the key it generated here; use it for local work.
        key_file = Path(os.environ.get("LOOPLLAMA_DATA_DIR") or ".loopllama") / "api-key"
        if key_file.is_file():
            key = key_file.read_text().strip()
    return LoopLlama(api_key=key or None, base_url=args.base_url)


def _emit(out: TextIO, value: BaseModel | Sequence[BaseModel]) -> None:
    if isinstance(value, Sequence):
        data: Any = [item.model_dump(mode="json") for item in value]
    elif isinstance(value, BaseModel):
        data = value.model_dump(mode="json")
    else:
        data = value
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out)


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        spec = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        raise UsageError(f"{path} is not valid {'YAML' if is_yaml else 'JSON'}: {error}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{path} must hold one object with name, crew, ...")
    # YAML reads some unquoted scalars (dates, times) as objects; send them as written.
    result: dict[str, Any] = json.loads(json.dumps(spec, default=str))
    return result


def _workflows(client: LoopLlama, args: argparse.Namespace, spec: dict[str, Any] | None,
               out: TextIO) -> int:
    if args.action == "create":
        assert spec is not None
        workflow = client.workflows.create(spec)
        _emit(out, workflow) if args.json else print(
            f"created {workflow.id}  {workflow.name}", file=out)
    elif args.action == "list":
        workflows = client.workflows.list()
        if args.json:
            _emit(out, workflows)
        for item in [] if args.json else workflows:
            roles = " → ".join(agent.role for agent in item.crew)
            print(f"{item.id}  {item.status:<6}  {item.name}  ({roles})", file=out)
    elif args.action == "delete":
        deleted = client.workflows.delete(args.workflow_id)
        _emit(out, deleted) if args.json else print(f"deleted {args.workflow_id}", file=out)
    else:
        act: dict[str, Callable[[str], Any]] = {
            "get": client.workflows.get, "pause": client.workflows.pause,
            "resume": client.workflows.resume,
        }
        workflow = act[args.action](args.workflow_id)
        _emit(out, workflow) if args.json else _print_workflow(workflow, out)
    return EXIT_OK


def _print_workflow(workflow: Any, out: TextIO) -> None:
    print(f"{workflow.id}  {workflow.name}  [{workflow.status}]", file=out)
    if workflow.description:
        print(f"  {workflow.description}", file=out)
    for order, agent in enumerate(workflow.crew, start=1):
        tools = f"  tools: {', '.join(agent.tools)}" if agent.tools else ""
        after = "" if agent.after is None else (
            f"  after: {', '.join(agent.after)}" if agent.after else "  after: (start)")
        print(f"  {order}. {agent.role}  ({agent.model}){tools}{after}", file=out)
    # (getattr: an SDK installed before MCP servers has no such field.)
    servers = getattr(workflow, "mcp_servers", None) or []
    if servers:
        print("  mcp servers: " + ", ".join(
            f"{server.name} ({_count(len(server.tools), 'tool')})" for server in servers),
            file=out)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _runs(client: LoopLlama, args: argparse.Namespace, out: TextIO, err: TextIO,
          stdin: TextIO) -> int:
    if args.action == "trigger":
        run = client.runs.trigger(args.workflow_id, args.input)
        if args.wait:
            if not args.json:
                print(f"{run.id}  {run.status}", file=out, flush=True)
            return _watch(client, run.id, args, out, err, stdin)
        _emit(out, run) if args.json else print(f"{run.id}  {run.status}", file=out)
        return EXIT_OK
    if args.action == "list":
        runs = client.runs.list(args.workflow_id)
        if args.json:
            _emit(out, runs)
        for item in [] if args.json else runs:
            print(f"{item.id}  {item.status:<13}  {item.total_steps} steps  "
                  f"{item.tokens_in}→{item.tokens_out} tokens  {_ts(item.created_at)}"
                  f"{_fork_note(item)}", file=out)
        return EXIT_OK
    if args.action == "get":
        run = client.runs.get(args.run_id)
        _emit(out, run) if args.json else _print_run(run, out)
        return _exit_for(run)
    if args.action == "respond":
        action = "input" if args.answer is not None else "approve" if args.approve else "reject"
        result = client.runs.respond(args.run_id, action, input=args.answer, reason=args.reason,
                                     pause_id=args.pause_id)
        _emit(out, result) if args.json else print(f"{result.id}  {result.status}", file=out)
        return EXIT_OK
    if args.action in ("fork", "compare"):
        from cli.fork_commands import run_compare, run_fork

        if args.action == "fork":
            return run_fork(client, args, args.fork_edits, out, err)
        return run_compare(client, args, out)
    if args.action in ("cancel", "retry"):
        changed = getattr(client.runs, args.action)(args.run_id)
        _emit(out, changed) if args.json else print(f"{changed.id}  {changed.status}", file=out)
        return EXIT_OK
    return _watch(client, args.run_id, args, out, err, stdin)


def _ts(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _fork_note(run: Run) -> str:
    """`  fork of RUN` for a fork, else nothing. (getattr: an SDK installed before forks
    has no such field.)"""
    origin = getattr(run, "forked_from", None)
    return f"  fork of {origin.run_id}" if origin is not None else ""


def _step_line(step: Step) -> str:
    mark = "✗" if step.error else "✓" if step.finished_at else "…"
    took = ""
    if step.started_at and step.finished_at:
        took = f"  {(step.finished_at - step.started_at).total_seconds():.1f}s"
    # A fork's steps say how they came to be (getattr: for an SDK from before forks).
    notes = ""
    if getattr(step, "reused_from", None):
        notes += "  reused"
    if getattr(step, "edited", False):
        notes += "  edited"
    misses = getattr(step, "replay_misses", None)
    if misses:
        notes += f"  {misses} replay miss{'' if misses == 1 else 'es'}"
    return (f"{mark} {step.order + 1}. {step.role}  {step.model}  "
            f"{step.tokens_in}→{step.tokens_out} tokens{took}{notes}")


def _start_line(step: Step) -> str:
    return f"… {step.order + 1}. {step.role}  {step.model}  started"


def _pause_line(pause: Pending) -> str:
    what = "question" if pause.kind == "input" else (
        f"approval of {pause.tool}" if pause.tool else pause.kind)
    return f"{pause.id or '(no id)'}  {pause.role or '?'}  {what}: {pause.prompt}"


def _print_run(run: Run, out: TextIO) -> None:
    print(f"{run.id}  {run.status}  {run.tokens_in}→{run.tokens_out} tokens", file=out)
    origin = getattr(run, "forked_from", None)
    if origin is not None:
        at = f" at step {origin.step_id}" if origin.step_id else ""
        print(f"  fork of {origin.run_id}{at} (its tokens count only what the fork "
              "consumed)", file=out)
    for step in run.steps:
        print(f"  {_step_line(step)}", file=out)
    pauses = run.open_pauses
    if len(pauses) == 1:
        print(f"  waiting for you: {pauses[0].prompt}", file=out)
    elif pauses:
        print(f"  waiting for you ({len(pauses)} open pauses, oldest first):", file=out)
        for pause in pauses:
            print(f"    {_pause_line(pause)}", file=out)
        print(f"  answer one with `loopllama runs respond {run.id} --pause-id ID ...`",
              file=out)
    if run.error:
        print(f"  error: {run.error}", file=out)
    if run.output is not None:
        print(f"\n{run.output}", file=out)


def _exit_for(run: Run) -> int:
    return EXIT_FAILED if run.status in ("failed", "cancelled") else EXIT_OK


@dataclass
class _Watched:
    """What a watch has told and done so far, kept across a fallback from the event
    stream to polling."""

    started: set[str] = field(default_factory=set)  # step ids whose start was printed
    finished: set[str] = field(default_factory=set)  # step ids whose end was printed
    answered: set[str] = field(default_factory=set)  # pauses prompted for, by key
    stdin_open: bool = True


def _watch(client: LoopLlama, run_id: str, args: argparse.Namespace, out: TextIO,
           err: TextIO, stdin: TextIO) -> int:
    """Follow the run until it ends: a line when each step starts and when it ends (so
    parallel steps show as they overlap), and a prompt for every open pause.

    Follows the run's event stream; falls back to polling when the stream cannot be had
    (an older server, a proxy that buffers it).
    """
    watched = _Watched()
    try:
        return _watch_stream(client, run_id, args, out, err, stdin, watched)
    except (APIStatusError, APIConnectionError):
        return _watch_poll(client, run_id, args, out, err, stdin, watched)


def _tell_step(step: Step, watched: _Watched, args: argparse.Namespace, out: TextIO) -> None:
    """Print the step's start and end, each once."""
    if step.id not in watched.started:
        watched.started.add(step.id)
        if not args.json:
            print(_start_line(step), file=out, flush=True)
    ended = step.finished_at is not None or step.error is not None
    if ended and step.id not in watched.finished:
        watched.finished.add(step.id)
        if not args.json:
            print(_step_line(step), file=out, flush=True)


def _watch_stream(client: LoopLlama, run_id: str, args: argparse.Namespace, out: TextIO,
                  err: TextIO, stdin: TextIO, watched: _Watched) -> int:
    interactive_spinner = err.isatty()
    spin = itertools.cycle(SPINNER)
    for event in client.runs.stream(run_id):
        step = event.step
        if step is not None:
            _tell_step(step, watched, args, out)
        if event.type == "run.waiting_input" and watched.stdin_open:
            # The stream replays a run's past pauses too: what is open is read afresh.
            _answer_open_pauses(client, client.runs.get(run_id), watched,
                                err if args.json else out, stdin)
        elif interactive_spinner and not event.is_terminal:
            where = f"step {step.order + 1} ({step.role})" if step else event.type
            print(f"\r{next(spin)} {where}", end="", file=err, flush=True)
    if interactive_spinner:
        print("\r\033[K", end="", file=err)
    return _finish_watch(client.runs.get(run_id), args, out)


def _finish_watch(run: Run, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        _emit(out, run)
    else:
        print(f"{run.status}: {run.error}" if run.error else run.status, file=out)
        if run.output is not None:
            print(f"\n{run.output}", file=out)
    return _exit_for(run)


def _watch_poll(client: LoopLlama, run_id: str, args: argparse.Namespace, out: TextIO,
                err: TextIO, stdin: TextIO, watched: _Watched) -> int:
    """Poll the run, print each step's start and end once, prompt at pauses, until it
    ends."""
    spin = itertools.cycle(SPINNER)
    interactive_spinner = err.isatty()
    while True:
        run = client.runs.get(run_id)
        for step in run.steps:
            _tell_step(step, watched, args, out)
        if run.is_terminal:
            if interactive_spinner:
                print("\r\033[K", end="", file=err)
            return _finish_watch(run, args, out)
        if run.is_waiting and watched.stdin_open and _unanswered(run, watched):
            # With --json, stdout carries only the final JSON; the dialogue goes to stderr.
            _answer_open_pauses(client, run, watched, err if args.json else out, stdin)
        elif interactive_spinner:
            running = [f"step {s.order + 1} ({s.role})" for s in run.steps
                       if not s.finished_at and not s.error]
            where = ", ".join(running) or run.status
            print(f"\r{next(spin)} {run.status}: {where}", end="", file=err, flush=True)
        time.sleep(args.interval)


def _pause_key(run: Run, pause: Pending) -> str:
    if pause.id is not None:
        return pause.id
    # An older server without pause ids: a later pause follows another model call.
    return f"{pause.model_dump_json()}|{run.total_steps}|{run.tokens_in}"


def _unanswered(run: Run, watched: _Watched) -> list[Pending]:
    return [pause for pause in run.open_pauses
            if _pause_key(run, pause) not in watched.answered]


def _answer_open_pauses(client: LoopLlama, run: Run, watched: _Watched, out: TextIO,
                        stdin: TextIO) -> None:
    """Prompt for every open pause not prompted for yet, oldest first, and send each
    answer with its pause's id; read the run again after, since another agent may have
    paused meanwhile. Stops once stdin has ended."""
    while watched.stdin_open and run.is_waiting:
        todo = _unanswered(run, watched)
        if not todo:
            return
        if len(todo) > 1:
            print(f"\n{len(todo)} agents are waiting for you.", file=out)
        for pause in todo:
            watched.answered.add(_pause_key(run, pause))
            watched.stdin_open = _answer_pause(client, run, pause, out, stdin)
            if not watched.stdin_open:
                return
        run = client.runs.get(run.id)


def _ask(prompt: str, out: TextIO, stdin: TextIO) -> str | None:
    print(prompt, end="", file=out, flush=True)
    line = stdin.readline()
    return None if line == "" else line.rstrip("\n")


def _answer_pause(client: LoopLlama, run: Run, pending: Pending, out: TextIO,
                  stdin: TextIO) -> bool:
    """Prompt for the answer to one open pause and send it with that pause's id; False
    once stdin has ended."""
    agent = f"  agent: {pending.role}" if pending.role else None
    if pending.kind == "input":
        print(f"\n? The agent asks: {pending.prompt}", file=out)
        if agent:
            print(agent, file=out)
        answer = ""
        while not answer.strip():
            line = _ask("> ", out, stdin)
            if line is None:
                return _no_more_input(run, out)
            answer = line
        action, text, reason = "input", answer, None
    else:
        print(f"\n! Approval needed: {pending.prompt}", file=out)
        if agent:
            print(agent, file=out)
        print(f"  tool: {pending.tool}", file=out)
        print(f"  arguments: {json.dumps(pending.tool_input, ensure_ascii=False)}", file=out)
        decision = ""
        while decision not in ("y", "yes", "n", "no"):
            line = _ask("Approve? [y/n] ", out, stdin)
            if line is None:
                return _no_more_input(run, out)
            decision = line.strip().lower()
        text, reason = None, None
        action = "approve" if decision.startswith("y") else "reject"
        if action == "reject":
            line = _ask("Reason (optional): ", out, stdin)
            reason = (line or "").strip() or None
    try:
        # Its pause id goes along, so the answer lands on this pause and no other (an
        # older server without pause ids: on `pending`, the only pause it has).
        client.runs.respond(run, action, input=text, reason=reason, pause_id=pending.id)
        print(f"  sent: {action}", file=out, flush=True)
    except ConflictError:
        print("  someone else answered first", file=out, flush=True)
    return True


def _no_more_input(run: Run, out: TextIO) -> bool:
    print(f"\n(no input; still waiting — answer with `loopllama runs respond {run.id}`)",
          file=out, flush=True)
    return False
