"""Fork benchmark: a fork against a full re-run of the same crew, and history sizes.

    python -m bench.bench_fork            # 12 agents x 4 KiB, 0.25 s per model call, 5 rounds
    python -m bench.bench_fork --quick    # 12 agents x 1 KiB, 0.05 s per call, 2 rounds

A 12-agent chain whose every model call takes `call_seconds` (the fake Messages API
holds its answer that long, as a real model would) and bills 1,000 tokens in and 250
out. Per round: one source run, then from it a fork with new instructions for the last
agent, one for the seventh (six run again), and a full re-run (a new trigger of the same
crew). Wall time is from the POST until `GET` shows `completed`; tokens are the new run's
totals (a fork counts only what it consumed); model calls are the fake's count; history
events and bytes are what Temporal reports for the execution (a fork's start goes to
the blob store by reference). Medians over the rounds, and the ratio to the re-run.

Processes as in bench_lifecycle (bench/stack.py): a dev server, `loopllama worker` and
`loopllama api` as children, the fake Messages API in this process.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from temporalio.client import Client

from bench.bench_lifecycle import crew, for_tag, wait_status
from bench.processes import plan_main, sync_http
from bench.stack import Stack, loopllama_stack
from core.temporal import connect
from tests.fakes.anthropic_server import FakeAnthropic

AGENTS = 12
TOKENS_IN, TOKENS_OUT = 1000, 250


@dataclass(frozen=True)
class Plan:
    """How much to do."""

    rounds: int
    output_bytes: int
    call_seconds: float


FULL = Plan(rounds=5, output_bytes=4 * 1024, call_seconds=0.25)
QUICK = Plan(rounds=2, output_bytes=1024, call_seconds=0.05)

ROLES = [f"agent{i:02d}" for i in range(1, AGENTS + 1)]


@dataclass
class Measured:
    """One new run: how long it took and what it cost."""

    seconds: float
    tokens: int
    calls: int
    events: int
    history_bytes: int


class Bench:
    """One stack, one fake, and the client that reads history sizes."""

    def __init__(self, stack: Stack, fake: FakeAnthropic, temporal: Client, plan: Plan) -> None:
        self._stack, self._fake, self._temporal, self._plan = stack, fake, temporal, plan

    def _script(self, tag: str, roles: list[str], label: str) -> None:
        for role in roles:
            text = f"{role} {label}: " + "x" * self._plan.output_bytes
            self._fake.reply_text(text, tokens_in=TOKENS_IN, tokens_out=TOKENS_OUT,
                                  delay=self._plan.call_seconds, when=for_tag(tag, role))

    def _calls(self, tag: str) -> int:
        return sum(self._fake.count(for_tag(tag, role)) for role in ROLES)

    async def _measured(self, http: httpx.Client, tag: str,
                        start: Callable[[], httpx.Response]) -> tuple[str, Measured]:
        calls_before = self._calls(tag)
        began = time.monotonic()
        answer = start()
        assert answer.status_code in (201, 202), answer.text
        run_id = answer.json()["data"]["id"]
        done = await asyncio.to_thread(wait_status, http, run_id, "completed", "failed",
                                       within=300)
        took = time.monotonic() - began
        assert done["status"] == "completed", done["error"]
        info = (await self._temporal.get_workflow_handle(run_id).describe()).raw_description
        return run_id, Measured(
            seconds=took, tokens=done["tokens_in"] + done["tokens_out"],
            calls=self._calls(tag) - calls_before,
            events=info.workflow_execution_info.history_length,
            history_bytes=info.workflow_execution_info.history_size_bytes)

    async def round(self) -> dict[str, Measured]:
        """A source run, two forks of it and a full re-run."""
        tag = uuid.uuid4().hex[:8]
        out: dict[str, Measured] = {}
        with sync_http(self._stack.url, self._stack.key) as http:
            workflow = http.post("/v1/workflows", json={
                "name": "fork bench", "crew": crew(tag, *ROLES)}).json()["data"]
            runs = f"/v1/workflows/{workflow['id']}/runs"
            body = {"input": "Write the report."}
            self._script(tag, ROLES, "source")
            source, out["source run"] = await self._measured(
                http, tag, lambda: http.post(runs, json=body))
            for name, at in (("fork from agent 12 (1 runs again)", AGENTS - 1),
                             ("fork from agent 7 (6 run again)", 6)):
                role = ROLES[at]
                self._script(tag, ROLES[at:], "fork")
                edit = {"from": role,
                        "agents": {role: {"instructions": f"[{tag}:{role}] Shorter."}}}
                _, out[name] = await self._measured(
                    http, tag, partial(http.post, f"/v1/runs/{source}/fork", json=edit))
            self._script(tag, ROLES, "again")
            _, out["full re-run (12 run)"] = await self._measured(
                http, tag, lambda: http.post(runs, json=body))
        return out


def _median(rounds: list[dict[str, Measured]], name: str, field: str) -> float:
    return statistics.median(getattr(r[name], field) for r in rounds)


def print_table(rounds: list[dict[str, Measured]], plan: Plan) -> None:
    """Medians per kind of run, with wall time and tokens as a share of the re-run."""
    names = list(rounds[0])
    rerun = "full re-run (12 run)"
    base_s, base_t = _median(rounds, rerun, "seconds"), _median(rounds, rerun, "tokens")
    print(f"## fork vs re-run: {AGENTS} agents x {plan.output_bytes // 1024} KiB, "
          f"{plan.call_seconds:.2f} s per model call, {len(rounds)} rounds (medians)\n")
    print("| run | wall | vs re-run | tokens | vs re-run | model calls | history events "
          "| history bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        seconds, tokens = _median(rounds, name, "seconds"), _median(rounds, name, "tokens")
        print(f"| {name} | {seconds:.2f} s | {seconds / base_s:.2f}x | {tokens:.0f} | "
              f"{tokens / base_t:.2f}x | {_median(rounds, name, 'calls'):.0f} | "
              f"{_median(rounds, name, 'events'):.0f} | "
              f"{_median(rounds, name, 'history_bytes'):.0f} |")


async def run(plan: Plan) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-fork-"))
    try:
        with FakeAnthropic() as fake:
            async with loopllama_stack(tmp, fake) as stack:
                temporal = await connect(stack.server.address, "default",
                                         blob_dir=tmp / "blobs")
                bench = Bench(stack, fake, temporal, plan)
                rounds = [await bench.round() for _ in range(plan.rounds)]
        print_table(rounds, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return plan_main(__doc__, run, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
