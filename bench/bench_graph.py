"""Crew graphs benchmark: agents side by side against the critical path, and wide runs.

    python -m bench.bench_graph            # full: ~1-2 minutes
    python -m bench.bench_graph --quick    # smoke: ~30 s

- fan-out/fan-in: a 1 → 4 → 1 crew (planner; four researchers each `after: ["planner"]`;
  an editor `after` the four). The fake model answers each researcher after 1.0 s and
  the planner and editor at once. Its latency (POST trigger → `run.completed` read from
  the run's event stream) is compared with the critical path, measured in the same
  bench: a plain 3-agent chain planner → one researcher (1.0 s) → editor, runs
  interleaved with the graph's. Target: graph ≤ 1.15× critical path. The same six
  agents as a chain (no `after`: ~4 s of model time) are shown for comparison.
- wide: one run of 64 agents all `after: []` with `max_parallel: 64`, fast answers:
  latency, and its Temporal history (event count and bytes), next to a 3-agent chain.

Processes as in bench_lifecycle (bench/stack.py): a dev server, `loopllama worker` and
`loopllama api` as children on 127.0.0.1, the fake Messages API in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_runs import CLAUDE_MODEL, REPLY_TEXT, RUN_INPUT
from bench.processes import median_ms, pct_ms, plan_main, sync_http
from bench.stack import Stack, loopllama_stack
from core.temporal import connect
from tests.fakes.anthropic_server import FakeAnthropic, Reply, system_text, text_reply

SLOW_MARKER = "[bench-graph:slow]"
SLOW_SECONDS = 1.0
RESEARCHERS = [f"researcher{i}" for i in range(1, 5)]
WIDE = 64


@dataclass(frozen=True)
class Plan:
    """How much to do."""

    name: str
    graph_runs: int  # 1 → 4 → 1 runs, interleaved with as many critical-path chains
    chain_fan_runs: int  # the same six agents as a chain (~4 s each)
    wide_runs: int  # 64-agent runs (the history of the last one is reported)
    chain3_runs: int  # fast 3-agent chains, for the history's scale
    warmup: int = 1
    budget: float = 600.0  # seconds for all measurements; then the bench gives up


FULL = Plan("full", graph_runs=15, chain_fan_runs=3, wide_runs=3, chain3_runs=5)
QUICK = Plan("quick", graph_runs=3, chain_fan_runs=1, wide_runs=1, chain3_runs=2,
             budget=240.0)


# -------------------------------------------------------------------------------- crews


def agent(role: str, tag: str, *, slow: bool = False,
          after: list[str] | None = None) -> dict[str, Any]:
    marker = f" {SLOW_MARKER}" if slow else ""
    body: dict[str, Any] = {
        "role": role, "model": CLAUDE_MODEL,
        "instructions": f"You are the {role} of the bench crew [{tag}].{marker}",
    }
    if after is not None:
        body["after"] = after
    return body


def fan_crew(tag: str, *, graph: bool) -> list[dict[str, Any]]:
    """Planner, four slow researchers, editor: 1 → 4 → 1 (or, without `after`, a chain)."""
    return [
        agent("planner", tag),
        *(agent(role, tag, slow=True, after=["planner"] if graph else None)
          for role in RESEARCHERS),
        agent("editor", tag, after=list(RESEARCHERS) if graph else None),
    ]


def critical_path_crew(tag: str) -> list[dict[str, Any]]:
    """The graph's critical path as a plain chain: planner → one slow researcher → editor."""
    return [agent("planner", tag), agent("researcher1", tag, slow=True), agent("editor", tag)]


def wide_crew(tag: str, count: int) -> list[dict[str, Any]]:
    return [agent(f"agent{i:02d}", tag, after=[]) for i in range(1, count + 1)]


def answer(request: dict[str, Any]) -> Reply:
    """Researchers (the slow marker in their system prompt) after 1 s, everyone else at once."""
    if SLOW_MARKER in system_text(request):
        return text_reply(REPLY_TEXT, delay=SLOW_SECONDS)
    return text_reply(REPLY_TEXT)


# ---------------------------------------------------------------------------- running


def parse_ts(value: str | None) -> float:
    if not value:
        raise ValueError("missing timestamp")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Aborted(Exception):
    """The bench is stopping: loops in threads end at their next check."""


@dataclass
class Runner:
    stack: Stack
    deadline: float  # time.monotonic() after which every loop gives up
    abort: threading.Event
    stream_socket: socket.socket | None = None  # the event stream being read, if any

    def stop(self) -> None:
        """Make the loops end now: a thread blocked reading an event stream gets EOF."""
        self.abort.set()
        sock = self.stream_socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def check(self) -> None:
        if self.abort.is_set():
            raise Aborted()
        if time.monotonic() > self.deadline:
            raise RuntimeError("the bench ran out of its time budget")

    def create(self, http: httpx.Client, name: str, crew: list[dict[str, Any]],
               **extra: Any) -> str:
        response = http.post("/v1/workflows", json={"name": name, "crew": crew, **extra})
        if response.status_code != 201:
            raise RuntimeError(f"create {name}: {response.status_code} {response.text}")
        return str(response.json()["data"]["id"])

    def run_once(self, http: httpx.Client, workflow_id: str, within: float = 60.0
                 ) -> dict[str, Any]:
        """Trigger a run, read its event stream until `run.completed`; the run and timings."""
        self.check()
        t0 = time.perf_counter()
        response = http.post(f"/v1/workflows/{workflow_id}/runs", json={"input": RUN_INPUT})
        if response.status_code != 202:
            raise RuntimeError(f"trigger: {response.status_code} {response.text}")
        run_id = str(response.json()["data"]["id"])
        ended = ""
        with http.stream("GET", f"/v1/runs/{run_id}/events", timeout=within) as events:
            if events.status_code != 200:
                raise RuntimeError(f"events: {events.status_code} {events.read()!r}")
            stream = events.extensions.get("network_stream")
            self.stream_socket = stream.get_extra_info("socket") if stream else None
            try:
                for line in events.iter_lines():
                    self.check()
                    if line in ("event: run.completed", "event: run.failed",
                                "event: run.cancelled"):
                        ended = line.removeprefix("event: ")
                        break
                    if time.perf_counter() - t0 > within:
                        break
            finally:
                self.stream_socket = None
            self.check()
        total = time.perf_counter() - t0
        run: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()["data"]
        if ended != "run.completed" or run["status"] != "completed":
            raise RuntimeError(f"run {run_id} (workflow {workflow_id}): stream ended with "
                               f"{ended or 'nothing'} within {within:.0f}s, status "
                               f"{run['status']}, error {run.get('error')!r}")
        return {"id": run_id, "total": total, "run": run}


def step_times(run: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(started_at, finished_at) of each step by role, POSIX seconds."""
    return {step["role"]: (parse_ts(step["started_at"]), parse_ts(step["finished_at"]))
            for step in run["steps"]}


def fan_breakdown(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of where a 1 → 4 → 1 run's time goes, from its steps (ms resolution)."""
    parts: dict[str, list[float]] = {"to_planner": [], "planner": [], "spread": [],
                                     "researcher": [], "join": [], "editor": [], "to_end": []}
    for item in runs:
        run = item["run"]
        steps = step_times(run)
        if len(steps) != 6:
            raise RuntimeError(f"run {item['id']}: {len(steps)} steps, expected 6")
        starts = [steps[r][0] for r in RESEARCHERS]
        ends = [steps[r][1] for r in RESEARCHERS]
        parts["to_planner"].append(steps["planner"][0] - parse_ts(run["created_at"]))
        parts["planner"].append(steps["planner"][1] - steps["planner"][0])
        parts["spread"].append(max(starts) - min(starts))
        parts["researcher"] += [e - s for s, e in zip(starts, ends, strict=True)]
        parts["join"].append(steps["editor"][0] - max(ends))
        parts["editor"].append(steps["editor"][1] - steps["editor"][0])
        parts["to_end"].append(parse_ts(run["finished_at"]) - steps["editor"][1])
    return {name: median_ms(values) for name, values in parts.items()}


async def history_of(client: Any, run_id: str) -> dict[str, float]:
    handle = client.get_workflow_handle(run_id)
    history = await handle.fetch_history()
    info = (await handle.describe()).raw_description.workflow_execution_info
    return {
        "events": float(len(history.events)),
        "proto": float(sum(event.ByteSize() for event in history.events)),
        "json": float(len(history.to_json())),
        "server": float(info.history_size_bytes),
    }


# ------------------------------------------------------------------------ measurements


async def measure(runner: Runner, plan: Plan, tmp: Path, fake: FakeAnthropic
                  ) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    with sync_http(runner.stack.url, runner.stack.key) as http:
        wf_graph = runner.create(http, "bench 1-4-1", fan_crew(f"{tag}-g", graph=True))
        wf_crit = runner.create(http, "bench critical path", critical_path_crew(f"{tag}-c"))
        wf_fan_chain = runner.create(http, "bench 1-4-1 as a chain",
                                     fan_crew(f"{tag}-f", graph=False))
        wf_wide = runner.create(http, f"bench wide {WIDE}", wide_crew(f"{tag}-w", WIDE),
                                max_parallel=WIDE)
        wf_chain3 = runner.create(http, "bench chain 3",
                                  [agent(f"agent{i}", f"{tag}-3") for i in (1, 2, 3)])

    def sequence() -> dict[str, list[dict[str, Any]]]:
        got: dict[str, list[dict[str, Any]]] = {
            "graph": [], "crit": [], "fan_chain": [], "wide": [], "chain3": []}
        with sync_http(runner.stack.url, runner.stack.key) as http:
            progress("warm-up")
            for _ in range(plan.warmup):
                for workflow_id in (wf_graph, wf_crit, wf_chain3, wf_wide):
                    runner.run_once(http, workflow_id)
            progress(f"1 → 4 → 1 and its critical path: {plan.graph_runs} runs each, "
                     "alternating")
            for i in range(plan.graph_runs):
                # Alternate who goes first, so drift hits both alike.
                pair = ("graph", wf_graph), ("crit", wf_crit)
                for key, workflow_id in pair if i % 2 == 0 else pair[::-1]:
                    got[key].append(runner.run_once(http, workflow_id))
            progress(f"1 → 4 → 1 as a chain: {plan.chain_fan_runs} runs")
            for _ in range(plan.chain_fan_runs):
                got["fan_chain"].append(runner.run_once(http, wf_fan_chain))
            progress(f"{WIDE} agents side by side: {plan.wide_runs} runs; "
                     f"3-agent chain: {plan.chain3_runs} runs")
            for i in range(max(plan.wide_runs, plan.chain3_runs)):
                if i < plan.wide_runs:
                    got["wide"].append(runner.run_once(http, wf_wide, within=120.0))
                if i < plan.chain3_runs:
                    got["chain3"].append(runner.run_once(http, wf_chain3))
        return got

    got = await asyncio.to_thread(sequence)
    slow_calls = fake.count(lambda body: SLOW_MARKER in system_text(body))
    expected_slow = (plan.warmup + plan.graph_runs) * 5 + plan.chain_fan_runs * 4
    client = await connect(runner.stack.server.address, "default", blob_dir=tmp / "blobs")
    return {
        "got": got,
        "slow_calls": slow_calls,
        "expected_slow": expected_slow,
        "hist_wide": await history_of(client, got["wide"][-1]["id"]),
        "hist_chain3": await history_of(client, got["chain3"][-1]["id"]),
        "hist_graph": await history_of(client, got["graph"][-1]["id"]),
        "wide_spread": statistics.median(
            max(s for s, _ in step_times(x["run"]).values())
            - min(s for s, _ in step_times(x["run"]).values()) for x in got["wide"]),
        "wide_steps": [len(x["run"]["steps"]) for x in got["wide"]],
    }


# ------------------------------------------------------------------------------ report


def progress(message: str) -> None:
    print(f"[bench_graph] {message}", file=sys.stderr, flush=True)


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def report(plan: Plan, found: dict[str, Any], header: str, elapsed: float) -> str:
    got = found["got"]

    def med(key: str) -> float:
        return median_ms([x["total"] for x in got[key]])

    def p90(key: str) -> float:
        return pct_ms([x["total"] for x in got[key]], 90)

    graph, crit, fan_chain = med("graph"), med("crit"), med("fan_chain")
    wide, chain3 = med("wide"), med("chain3")
    ratio = graph / crit
    hw, h3, hg = found["hist_wide"], found["hist_chain3"], found["hist_graph"]
    n = plan.graph_runs
    lines = [
        f"## LoopLlama crew graphs benchmark ({plan.name})",
        "",
        header,
        "(the machine is shared: other jobs may have been running; read ratios, not "
        "absolutes)",
        "",
        "| metric | value | reference | ratio | target | |",
        "|---|---|---|---|---|---|",
        f"| 1 → 4 → 1 crew (researchers 1.0 s each, side by side): POST trigger → "
        f"`run.completed` on the event stream, p50 of {n} (reference: the critical path, "
        f"a 3-agent chain planner → researcher (1.0 s) → editor, p50 of {n} interleaved) "
        f"| {ms(graph)} | {ms(crit)} | {ratio:.2f}× | ≤ 1.15× critical path | "
        f"{'PASS' if ratio <= 1.15 else 'MISS'} |",
        f"| the same, p90 | {ms(p90('graph'))} | {ms(p90('crit'))} | "
        f"{p90('graph') / p90('crit'):.2f}× | — | |",
        f"| the same six agents as a chain (no `after`), p50 of {plan.chain_fan_runs} "
        f"(reference: critical path + 3 × 1.0 s) | {ms(fan_chain)} | {ms(crit + 3000)} | "
        f"{fan_chain / (crit + 3000):.2f}× | — | |",
        f"| {WIDE} agents, all `after: []`, max_parallel {WIDE}, fast answers: trigger → "
        f"`run.completed`, p50 of {plan.wide_runs} (reference: 3-agent chain, p50 of "
        f"{plan.chain3_runs}) | {ms(wide)} | {ms(chain3)} | {wide / chain3:.2f}× | — | |",
        f"| history events ({WIDE} agents vs 3-agent chain) | {hw['events']:.0f} | "
        f"{h3['events']:.0f} | {hw['events'] / h3['events']:.1f}× | — | |",
        f"| history bytes: Σ event.ByteSize() of `fetch_history()` (serialized protos) | "
        f"{hw['proto']:.0f} | {h3['proto']:.0f} | {hw['proto'] / h3['proto']:.1f}× | — | |",
        f"| history bytes: `len(history.to_json())` | {hw['json']:.0f} | {h3['json']:.0f} "
        f"| {hw['json'] / h3['json']:.1f}× | — | |",
        f"| history bytes: `history_size_bytes` from describe() (the server's count) | "
        f"{hw['server']:.0f} | {h3['server']:.0f} | {hw['server'] / h3['server']:.1f}× "
        f"| — | |",
    ]
    bd = fan_breakdown(got["graph"])
    crit_steps = [step_times(x["run"]) for x in got["crit"]]
    crit_research = median_ms([s["researcher1"][1] - s["researcher1"][0] for s in crit_steps])
    per_agent_events = (hw["events"] - h3["events"]) / (WIDE - 3)
    per_agent_bytes = (hw["proto"] - h3["proto"]) / (WIDE - 3)
    lines += [
        "",
        "Where the time goes (medians, from the runs' own timestamps, ms resolution):",
        f"- 1 → 4 → 1: created_at → planner started {ms(bd['to_planner'])}, planner "
        f"{ms(bd['planner'])}, the four researchers started within {ms(bd['spread'])} of "
        f"each other and took {ms(bd['researcher'])} each, last researcher finished → "
        f"editor started {ms(bd['join'])}, editor {ms(bd['editor'])}, editor finished → "
        f"run finished_at {ms(bd['to_end'])}.",
        f"- critical-path chain: its researcher step took {ms(crit_research)}; the chain "
        f"minus the 1.0 s call is {ms(crit - 1000)} (a fast 3-agent chain: {ms(chain3)}).",
        f"- {WIDE}-agent run: steps per run {found['wide_steps']}, all {WIDE} started "
        f"within {ms(found['wide_spread'] * 1000)} (first → last started_at); per extra "
        f"agent over the 3-agent chain: {per_agent_events:.1f} events, "
        f"{per_agent_bytes:.0f} proto bytes.",
        f"- the last 1 → 4 → 1 run's history: {hg['events']:.0f} events, {hg['proto']:.0f} "
        f"proto bytes.",
        f"- slow (1.0 s) model calls the fake served: {found['slow_calls']} (expected "
        f"{found['expected_slow']}).",
        "",
        f"- command: python -m bench.bench_graph{' --quick' if plan.name == 'quick' else ''}",
        f"- measured in {elapsed:.0f} s; processes: temporal dev server, `loopllama api`, "
        "`loopllama worker`, this process (load generator + fake Anthropic).",
    ]
    return "\n".join(lines)


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: nproc {os.cpu_count()}, load average before the run {load}"


async def run(plan: Plan) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM cleans up like Ctrl-C: cancel this task so every `finally` runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    header = machine()
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-graph-"))
    abort = threading.Event()
    failed = False
    try:
        with FakeAnthropic(default=answer) as fake:
            async with loopllama_stack(tmp, fake) as stack:
                runner = Runner(stack, time.monotonic() + plan.budget, abort)
                started = time.monotonic()
                try:
                    found = await asyncio.wait_for(measure(runner, plan, tmp, fake),
                                                   timeout=plan.budget + 30)
                finally:
                    runner.stop()
                elapsed = time.monotonic() - started
                stack.worker.check_alive()
                stack.api.check_alive()
        print(report(plan, found, header, elapsed))
    except BaseException:
        failed = True
        raise
    finally:
        abort.set()
        if failed:
            progress(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(asyncio.CancelledError):
        return plan_main(__doc__, run, FULL, QUICK, argv)
    return 130


if __name__ == "__main__":
    sys.exit(main())
