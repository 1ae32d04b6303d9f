"""`loopllama runs fork` and `loopllama runs compare`: forks of ended runs, and what they
changed.

A fork (POST /v1/runs/{id}/fork) starts an ended run's crew again from one agent, with
edits; the steps the edits do not touch are reused from the source. `runs fork RUN`
forks one run; `runs fork --workflow W --last N` forks the workflow's N newest finished
runs with the same edits, waits for them all and prints one table (a quick evaluation of
a prompt or model change against recent inputs). `runs compare A B` shows, step by step,
what differs between two runs: which of B's steps were reused, and a diff of the outputs
that changed.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from loopllama import LoopLlama
from loopllama.errors import APIStatusError, LoopLlamaError
from loopllama.types import Run, Step

from cli.client_commands import (
    EXIT_FAILED,
    EXIT_OK,
    SPINNER,
    UsageError,
    _emit,
    _exit_for,
    _positive_seconds,
    _print_run,
)

# The runs list answers a workflow's 50 newest runs.
MAX_LAST = 50


def add_fork_commands(rn: Any, common: argparse.ArgumentParser) -> None:
    """Register `runs fork` and `runs compare` on the `runs` subparsers."""
    fork = rn.add_parser(
        "fork", parents=[common],
        help="Start an ended run again from one agent, with edits.",
        description="Start a new run of an ended (completed, failed or cancelled) run's "
                    "crew again from one agent, with edits. Steps the edits do not touch "
                    "are reused from the source run, not run (or paid for) again. With "
                    "--workflow and --last N: fork the workflow's N newest finished runs "
                    "with the same edits, wait for all of them, and print one table.",
    )
    fork.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run to fork")
    fork.add_argument("--workflow", metavar="WORKFLOW_ID",
                      help="fork this workflow's newest finished runs (with --last)")
    fork.add_argument("--last", type=_positive_count, metavar="N",
                      help=f"with --workflow: how many finished runs (1-{MAX_LAST})")
    fork.add_argument("--from", dest="from_role", required=True, metavar="ROLE",
                      help="the agent to start again from")
    fork.add_argument("--model", action="append", default=[], metavar="ROLE=MODEL",
                      help="give an agent another model (repeatable)")
    fork.add_argument("--instructions", action="append", default=[],
                      metavar="ROLE=TEXT|@FILE",
                      help="give an agent other instructions (repeatable)")
    fork.add_argument("--max-tokens", action="append", default=[], metavar="ROLE=N",
                      help="give an agent another max_tokens (repeatable)")
    fork.add_argument("--output", action="append", default=[], metavar="ROLE=TEXT|@FILE",
                      help="set an agent's output by hand; that step does not run "
                           "(repeatable)")
    fork.add_argument("--input", dest="fork_input", metavar="TEXT",
                      help="a new input for the fork (every step not set with --output "
                           "runs again)")
    fork.add_argument("--tools", choices=("live", "replay"), default="live",
                      help="live: tools act again (default); replay: tools answer from "
                           "the source run's record")
    fork.add_argument("--wait", action="store_true",
                      help="wait until the fork ends (or pauses for a human) and print it "
                           "as `runs get` does (--last always waits)")
    fork.add_argument("--interval", type=_positive_seconds, default=1.0,
                      help="seconds between polls while waiting (default 1)")

    compare = rn.add_parser(
        "compare", parents=[common], help="Step by step: what differs between two runs.",
        description="Compare two runs of a crew (say a run and its fork) step by step, "
                    "in crew order: whether B's step was reused from A, a unified diff of "
                    "outputs that differ, tokens and durations side by side, and totals.",
    )
    compare.add_argument("run_a", metavar="RUN_A", help="the run to compare against")
    compare.add_argument("run_b", metavar="RUN_B", help="the other run, e.g. a fork of A")


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LAST:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LAST}")
    return value


# --- The command line's edits -------------------------------------------------------


@dataclass
class ForkEdits:
    """What `--model/--instructions/--max-tokens/--output/--input/--tools` ask for."""

    agents: dict[str, dict[str, Any]]
    outputs: dict[str, str]


def check_fork_args(args: argparse.Namespace) -> ForkEdits:
    """The edits of a `runs fork` command line; `UsageError` for anything it gets wrong
    (checked before any request)."""
    if (args.run_id is None) == (args.workflow is None):
        raise UsageError("runs fork takes a RUN_ID, or --workflow with --last N (not both)")
    if args.workflow is not None and args.last is None:
        raise UsageError("--workflow goes with --last N")
    if args.last is not None and args.workflow is None:
        raise UsageError("--last goes with --workflow")
    if not args.from_role.strip():
        raise UsageError("--from needs a role")
    agents: dict[str, dict[str, Any]] = {}
    for role, model in _pairs("--model", args.model).items():
        if not model.strip():
            raise UsageError(f"--model {role}= needs a model name")
        agents.setdefault(role, {})["model"] = model.strip()
    for role, text in _pairs("--instructions", args.instructions).items():
        agents.setdefault(role, {})["instructions"] = _text("--instructions", role, text)
    for role, number in _pairs("--max-tokens", args.max_tokens).items():
        try:
            tokens = int(number)
        except ValueError:
            tokens = 0
        if tokens < 1:
            raise UsageError(f"--max-tokens {role}= needs a whole number of 1 or more, "
                             f"got {number!r}")
        agents.setdefault(role, {})["max_tokens"] = tokens
    outputs = {role: _text("--output", role, text)
               for role, text in _pairs("--output", args.output).items()}
    return ForkEdits(agents=agents, outputs=outputs)


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        role, sep, value = item.partition("=")
        role = role.strip()
        if not sep or not role:
            raise UsageError(f"{flag} takes ROLE=VALUE, got {item!r}")
        if role in pairs:
            raise UsageError(f"{flag} is given twice for {role!r}")
        pairs[role] = value
    return pairs


def _text(flag: str, role: str, value: str) -> str:
    """TEXT as it is, or the contents of FILE for `@FILE` (`@@...` is a literal `@...`)."""
    if value.startswith("@@") or not value.startswith("@"):
        return value[1:] if value.startswith("@@") else value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{flag} {role}=@{path}: cannot read it: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {role}=@{path}: not UTF-8 text") from None


# --- runs fork --------------------------------------------------------------------


def run_fork(client: LoopLlama, args: argparse.Namespace, edits: ForkEdits, out: TextIO,
             err: TextIO) -> int:
    """`runs fork`: one run, or the workflow's last N finished runs."""
    if not hasattr(client.runs, "fork"):
        raise LoopLlamaError("the installed loopllama SDK has no runs.fork(); upgrade it "
                             "(pip install ./sdk)")
    if args.workflow is not None:
        return _fork_last(client, args, edits, out, err)
    run = _fork(client, args.run_id, args, edits)
    if not args.wait:
        _emit(out, run) if args.json else print(f"{run.id}  {run.status}", file=out)
        return EXIT_OK
    if not args.json:
        print(f"{run.id}  {run.status}", file=out, flush=True)
    final = client.runs.poll(run, interval=args.interval)
    if args.json:
        _emit(out, final)
    else:
        _print_run(final, out)
        if final.is_waiting:
            print(f"\n(paused; answer with `loopllama runs watch {final.id}`)", file=out)
    return _exit_for(final)


def _fork(client: LoopLlama, source: str | Run, args: argparse.Namespace,
          edits: ForkEdits) -> Run:
    return client.runs.fork(
        source, from_=args.from_role, agents=edits.agents or None,
        outputs=edits.outputs or None, input=args.fork_input, tools=args.tools,
    )


@dataclass
class _Row:
    """One source run of `fork --last` and what became of its fork."""

    source: Run
    fork: Run | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        """A fork that has neither ended nor paused for a human."""
        return self.fork is not None and not self.fork.is_terminal and not self.fork.is_waiting

    @property
    def output_changed(self) -> bool | None:
        """None until the fork has ended (or when there is none)."""
        if self.fork is None or not self.fork.is_terminal:
            return None
        return self.fork.output != self.source.output

    def json(self) -> dict[str, Any]:
        return {
            "source_run_id": self.source.id,
            "fork_run_id": self.fork.id if self.fork else None,
            "status": self.fork.status if self.fork else None,
            "output_changed": self.output_changed,
            "tokens_before": _tokens(self.source),
            "tokens_after": _tokens(self.fork) if self.fork else None,
            "error": self.error,
        }


def _tokens(run: Run) -> int:
    return run.tokens_in + run.tokens_out


def _fork_last(client: LoopLlama, args: argparse.Namespace, edits: ForkEdits, out: TextIO,
               err: TextIO) -> int:
    """Fork the workflow's last N finished runs, wait for every fork, print a table."""
    finished = [run for run in client.runs.list(args.workflow) if run.is_terminal]
    sources = finished[: args.last]
    if not sources:
        raise LoopLlamaError(f"workflow {args.workflow!r} has no finished runs to fork")
    if len(sources) < args.last:
        print(f"loopllama: only {len(sources)} finished run"
              f"{'' if len(sources) == 1 else 's'} of the {args.last} asked for; forking "
              f"{'it' if len(sources) == 1 else 'those'}", file=err)
    rows = [_Row(source) for source in sources]
    for row in rows:
        try:
            row.fork = _fork(client, row.source, args, edits)
        except APIStatusError as error:
            row.error = str(error)
    if all(row.fork is None for row in rows):
        # Nothing started: most likely the same edit was refused for every run.
        messages = list(dict.fromkeys(row.error or "" for row in rows))
        for message in messages:
            print(f"loopllama: {message}", file=err)
        return EXIT_FAILED
    _wait_for_all(client, rows, args, err)
    if args.json:
        _emit_rows(rows, out)
    else:
        _print_table(rows, out)
    done = all(row.fork is not None and row.fork.status == "completed" for row in rows)
    return EXIT_OK if done else EXIT_FAILED


def _wait_for_all(client: LoopLlama, rows: list[_Row], args: argparse.Namespace,
                  err: TextIO) -> None:
    """Read every fork until it has ended or paused for a human."""
    spinner = err.isatty()
    spin = itertools.cycle(SPINNER)
    while True:
        for row in rows:
            if row.running:
                assert row.fork is not None
                row.fork = client.runs.get(row.fork)
        running = sum(row.running for row in rows)
        if not running:
            break
        if spinner:
            print(f"\r{next(spin)} {running} of {len(rows)} forks running", end="",
                  file=err, flush=True)
        time.sleep(args.interval)
    if spinner:
        print("\r\033[K", end="", file=err)


def _emit_rows(rows: list[_Row], out: TextIO) -> None:
    print(json.dumps([row.json() for row in rows], indent=2, ensure_ascii=False), file=out)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _print_table(rows: list[_Row], out: TextIO) -> None:
    header = ("SOURCE RUN", "FORK RUN", "STATUS", "OUTPUT CHANGED", "TOKENS (IN+OUT)")
    lines = [header]
    for row in rows:
        fork = row.fork
        lines.append((
            row.source.id,
            fork.id if fork else "-",
            fork.status if fork else "not forked",
            _yes_no(row.output_changed),
            f"{_tokens(row.source)} → {_tokens(fork) if fork else '-'}",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=False)]
        print("  ".join([*cells, line[-1]]), file=out)
    forks = [row.fork for row in rows if row.fork is not None]
    completed = sum(fork.status == "completed" for fork in forks)
    changed = sum(row.output_changed is True for row in rows)
    before = sum(_tokens(row.source) for row in rows if row.fork is not None)
    after = sum(_tokens(fork) for fork in forks)
    print(f"\n{len(forks)} of {len(rows)} forked, {completed} completed, output changed "
          f"in {changed}; tokens {before} → {after} (a fork counts only what it "
          "consumed)", file=out)
    for row in rows:
        if row.error:
            print(f"  {row.source.id} not forked: {row.error}", file=out)
        elif row.fork is not None and row.fork.is_waiting:
            print(f"  {row.fork.id} is waiting for you: `loopllama runs watch "
                  f"{row.fork.id}`", file=out)
        elif row.fork is not None and row.fork.error:
            print(f"  {row.fork.id} {row.fork.status}: {row.fork.error}", file=out)


# --- runs compare -----------------------------------------------------------------


def _seconds(step_or_run: Step | Run) -> float | None:
    if step_or_run.started_at is None or step_or_run.finished_at is None:
        return None
    return (step_or_run.finished_at - step_or_run.started_at).total_seconds()


def _took(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _step_tokens(step: Step | None) -> str:
    return "-" if step is None else f"{step.tokens_in}→{step.tokens_out}"


def _by_role(run: Run) -> dict[str, Step]:
    # One step per agent; should a role show twice, its latest step stands.
    return {step.role: step for step in run.steps}


def _roles_in_crew_order(a: Run, b: Run) -> list[str]:
    order: dict[str, int] = {}
    for step in [*a.steps, *b.steps]:
        order[step.role] = min(order.get(step.role, step.order), step.order)
    return sorted(order, key=lambda role: (order[role], role))


def _how(a_run: Run, b_run: Run, a: Step | None, b: Step | None) -> str:
    """How B's step came to be, next to A's."""
    if b is None:
        return "no step in B"
    if a is None:
        return "only in B"
    reused_from = getattr(b, "reused_from", None)
    if reused_from is not None:
        return "reused from A" if reused_from == a.id else f"reused (from step {reused_from})"
    if getattr(b, "edited", False):
        return "edited by hand"
    return "ran again" if getattr(b_run, "forked_from", None) is not None else "ran"


def _diff(role: str, a: str | None, b: str | None) -> list[str]:
    return list(difflib.unified_diff(
        (a or "").splitlines(), (b or "").splitlines(),
        fromfile=f"A/{role}" + ("" if a is not None else " (no output)"),
        tofile=f"B/{role}" + ("" if b is not None else " (no output)"), lineterm="",
    ))


def _origin(a: Run, b: Run) -> str | None:
    """What B's (or A's) `forked_from` says about the other, if anything."""
    for this, other, name, other_name in ((b, a, "B", "A"), (a, b, "A", "B")):
        origin = getattr(this, "forked_from", None)
        if origin is None:
            continue
        ids = origin.chain
        if other.id not in ids:
            continue
        where = ""
        if origin.run_id == other.id and origin.step_id is not None:
            step = next((s for s in other.steps if s.id == origin.step_id), None)
            where = f" from {step.role}" if step is not None else f" from step {origin.step_id}"
        kin = "a fork" if ids[0] == other.id else f"a fork ({len(ids)} forks down)"
        return f"{name} is {kin} of {other_name}{where}"
    return None


def run_compare(client: LoopLlama, args: argparse.Namespace, out: TextIO) -> int:
    """`runs compare A B`: step by step, in crew order."""
    a, b = client.runs.get(args.run_a), client.runs.get(args.run_b)
    a_steps, b_steps = _by_role(a), _by_role(b)
    roles = _roles_in_crew_order(a, b)
    if args.json:
        _emit_compare(a, b, roles, a_steps, b_steps, out)
        return EXIT_OK
    width = max(len(a.id), len(b.id))
    for name, run in (("A", a), ("B", b)):
        print(f"{name}  {run.id.ljust(width)}  {run.status:<13}  "
              f"{run.tokens_in}→{run.tokens_out} tokens  {_took(_seconds(run))}", file=out)
    origin = _origin(a, b)
    if origin:
        print(origin, file=out)
    for number, role in enumerate(roles, start=1):
        sa, sb = a_steps.get(role), b_steps.get(role)
        how = _how(a, b, sa, sb)
        misses = getattr(sb, "replay_misses", None) if sb is not None else None
        if misses:
            how += f", {misses} replay miss{'' if misses == 1 else 'es'}"
        print(f"\n{number}. {role}  {how}", file=out)
        a_out = sa.output if sa else None
        b_out = sb.output if sb else None
        if a_out == b_out:
            print("   same output" if a_out is not None else "   no output in either",
                  file=out)
        else:
            for line in _diff(role, a_out, b_out):
                print(f"   {line}", file=out)
        for name, step in (("A", sa), ("B", sb)):
            if step is not None and step.error:
                print(f"   {name} error: {step.error}", file=out)
        note = "  (copied; not counted in B's totals)" if sb is not None and getattr(
            sb, "reused_from", None) else ""
        a_tokens, b_tokens = _step_tokens(sa), _step_tokens(sb)
        a_took = _took(_seconds(sa)) if sa else "-"
        b_took = _took(_seconds(sb)) if sb else "-"
        col = max(len(a_tokens), len(a_took))
        print(f"   tokens    A {a_tokens.ljust(col)}  B {b_tokens}{note}", file=out)
        print(f"   duration  A {a_took.ljust(col)}  B {b_took}", file=out)
    a_total, b_total = f"{a.tokens_in}→{a.tokens_out}", f"{b.tokens_in}→{b.tokens_out}"
    a_took, b_took = _took(_seconds(a)), _took(_seconds(b))
    col = max(len(a_total), len(a_took))
    reused = sum(1 for step in b.steps if getattr(step, "reused_from", None))
    edited = sum(1 for step in b.steps if getattr(step, "edited", False))
    print("\ntotal", file=out)
    print(f"   tokens    A {a_total.ljust(col)}  B {b_total}", file=out)
    print(f"   duration  A {a_took.ljust(col)}  B {b_took}", file=out)
    print(f"   steps     A {str(len(a.steps)).ljust(col)}  B {len(b.steps)} "
          f"({reused} reused, {edited} edited by hand)", file=out)
    changed = sum(1 for role in roles if (a_steps[role].output if role in a_steps else None)
                  != (b_steps[role].output if role in b_steps else None))
    final = "same final output" if a.output == b.output else "final output differs"
    print(f"   {changed} of {len(roles)} step outputs differ; {final}", file=out)
    return EXIT_OK


def _emit_compare(a: Run, b: Run, roles: list[str], a_steps: dict[str, Step],
                  b_steps: dict[str, Step], out: TextIO) -> None:
    steps = []
    for role in roles:
        sa, sb = a_steps.get(role), b_steps.get(role)
        a_out, b_out = (sa.output if sa else None), (sb.output if sb else None)
        steps.append({
            "role": role,
            "a_step_id": sa.id if sa else None,
            "b_step_id": sb.id if sb else None,
            "b_is": _how(a, b, sa, sb),
            "reused_from_a": bool(sa and sb and getattr(sb, "reused_from", None) == sa.id),
            "edited": bool(sb and getattr(sb, "edited", False)),
            "replay_misses": getattr(sb, "replay_misses", None) if sb else None,
            "same_output": a_out == b_out,
            "diff": None if a_out == b_out else "\n".join(_diff(role, a_out, b_out)),
            "tokens": {"a": [sa.tokens_in, sa.tokens_out] if sa else None,
                       "b": [sb.tokens_in, sb.tokens_out] if sb else None},
            "seconds": {"a": _seconds(sa) if sa else None, "b": _seconds(sb) if sb else None},
        })
    data = {
        "a": {"id": a.id, "status": a.status, "tokens": [a.tokens_in, a.tokens_out],
              "seconds": _seconds(a)},
        "b": {"id": b.id, "status": b.status, "tokens": [b.tokens_in, b.tokens_out],
              "seconds": _seconds(b)},
        "relation": _origin(a, b),
        "same_final_output": a.output == b.output,
        "steps": steps,
    }
    print(json.dumps(data, indent=2, ensure_ascii=False), file=out)

