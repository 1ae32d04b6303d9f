"""Cost benchmark: what a crew's model calls bill, with prompt caching on and off.

    python -m bench.bench_cost              # 10-round tool loop, ~10-20 s
    python -m bench.bench_cost --rounds 20

One crew (a researcher with a long tool loop, an analyst with a shorter one, a writer
without tools; ~1,200-word instructions each) runs twice on a worker with prompt caching
on and twice on one with `LOOPLLAMA_PROMPT_CACHE=off`, against the fake Messages API
simulating the cache as the real API reports it (`PromptCache`: per model, the
documented minimum prefix, five-minute entries, ~20-block lookback). Every tool call
returns the same 400-word document from a local endpoint. Everything runs on 127.0.0.1
in this process (a Temporal dev server child, both workers, the API app over ASGI).

Billed-equivalent input tokens = uncached + 1.25 × cache writes + 0.1 × cache reads (the
five-minute cache's prices relative to uncached input). The fake's tokens are words;
tool definitions and tool_use inputs count 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from bench.bench_runs import CLAUDE_MODEL, progress
from bench.processes import free_port
from core.devserver import DevServer
from core.settings import Settings
from core.temporal import connect, ensure_namespace_ready
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    PromptCache,
    RecordedRequest,
    Reply,
    system_text,
    text_reply,
    tool_use_reply,
)
from tests.fakes.tool_server import ToolServer
from worker import build_worker

WRITE_PRICE, READ_PRICE = 1.25, 0.1
TARGET = 0.5  # a 10-round tool loop must cost at most half with caching
INSTRUCTIONS = " ".join(f"guideline{i % 113}" for i in range(1_200))
DOCUMENT = " ".join(f"finding{i % 131}" for i in range(400))
RUN_INPUTS = ("Research feature-flag systems and brief the team.",
              "Research canary releases and brief the team.")
LOOKUP = {
    "name": "lookup",
    "description": "Search the knowledge base for a topic.",
    "input_schema": {"type": "object", "properties": {"topic": {"type": "string"}},
                     "required": ["topic"]},
}


# ------------------------------------------------------------------------- the crew


def crew_spec(rounds: int, tool_url: str) -> dict[str, Any]:
    """The workflow: `[rounds=N]` in an agent's instructions tells the fake model its loop."""
    def agent(role: str, loop: int) -> dict[str, Any]:
        tools = {"tools": ["lookup"], "max_tool_rounds": max(loop, 1)} if loop else {}
        return {"role": role, "model": CLAUDE_MODEL,
                "instructions": f"You are the {role}. [rounds={loop}] {INSTRUCTIONS}", **tools}

    return {"name": "cost bench", "crew": [agent("researcher", rounds),
                                          agent("analyst", max(rounds // 2, 1)),
                                          agent("writer", 0)],
            "tools": [{**LOOKUP, "url": tool_url}]}


def role_of(request: dict[str, Any]) -> str:
    return system_text(request).split(".", 1)[0].removeprefix("You are the ")


def tool_rounds_done(request: dict[str, Any]) -> int:
    return sum(
        1 for message in request.get("messages", [])
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        and any(block.get("type") == "tool_result" for block in message["content"])
    )


def loop_model(request: dict[str, Any]) -> Reply:
    """The fake model: calls `lookup` until its loop is done, then answers."""
    wanted = int(system_text(request).split("[rounds=", 1)[1].split("]", 1)[0])
    done = tool_rounds_done(request)
    role = role_of(request)
    if done < wanted:
        return tool_use_reply("lookup", {"topic": f"{role} topic {done}"},
                              tool_use_id=f"toolu_{role}_{done}")
    return text_reply(f"The {role}'s summary: " + " ".join(["point"] * 80))


# ------------------------------------------------------------------------ the stack


@dataclass
class Side:
    """One configuration: its API (in process) and the requests its runs made."""

    name: str
    api: httpx.AsyncClient
    runs: list[dict[str, Any]]
    calls: list[list[RecordedRequest]]  # per run, in order


@contextlib.asynccontextmanager
async def stack(tmp: Path, fake: FakeAnthropic) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A dev server, then a worker and an API per configuration; yields the APIs by name."""
    server = DevServer(db_file=tmp / "temporal.db", log_file=tmp / "temporal.log",
                       port=free_port(), ui_port=None)
    progress(f"starting the Temporal dev server in {tmp}")
    await ensure_namespace_ready(await server.start())
    try:
        temporal = await connect(server.address, "default", blob_dir=tmp / "blobs")
        async with contextlib.AsyncExitStack() as apps:
            clients: dict[str, httpx.AsyncClient] = {}
            for name, switch in (("cache on", "on"), ("cache off", "off")):
                key = f"bench-{uuid.uuid4().hex}"
                settings = Settings.from_env({
                    "LOOPLLAMA_API_KEY": key, "LOOPLLAMA_DATA_DIR": str(tmp),
                    "TEMPORAL_ADDRESS": server.address,
                    "TEMPORAL_TASK_QUEUE": f"bench-cost-{switch}-{uuid.uuid4().hex[:6]}",
                    "ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": fake.url,
                    "LOOPLLAMA_HTTP_ALLOWLIST": "127.0.0.1", "LOOPLLAMA_PROMPT_CACHE": switch,
                })
                await apps.enter_async_context(build_worker(temporal, settings))
                clients[name] = await apps.enter_async_context(httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=create_app(settings, temporal)),
                    base_url="http://bench", headers={"Authorization": f"Bearer {key}"},
                    timeout=30.0,
                ))
            yield clients
    finally:
        await server.stop()


async def run_side(name: str, api: httpx.AsyncClient, fake: FakeAnthropic,
                   spec: dict[str, Any]) -> Side:
    created = await api.post("/v1/workflows", json=spec)
    created.raise_for_status()
    side = Side(name, api, [], [])
    for text in RUN_INPUTS:
        seen = fake.count()
        triggered = await api.post(f"/v1/workflows/{created.json()['data']['id']}/runs",
                                   json={"input": text})
        triggered.raise_for_status()
        run_id = triggered.json()["data"]["id"]
        deadline = time.monotonic() + 60
        while (run := (await api.get(f"/v1/runs/{run_id}")).json()["data"])["status"] in (
            "queued", "running"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: run {run_id} did not finish within 60 s")
            await asyncio.sleep(0.05)
        if run["status"] != "completed":
            raise RuntimeError(f"{name}: run {run_id} ended {run['status']}: {run['error']}")
        side.runs.append(run)
        side.calls.append(fake.requests[seen:])
    return side


# ------------------------------------------------------------------------- the report


def usage(call: RecordedRequest) -> tuple[int, int, int]:
    """(uncached, cache writes, cache reads) of one model call."""
    assert call.response is not None
    u = call.response["usage"]
    return u["input_tokens"], u["cache_creation_input_tokens"], u["cache_read_input_tokens"]


def billed(uncached: int, writes: int, reads: int) -> float:
    return uncached + WRITE_PRICE * writes + READ_PRICE * reads


def billed_run(run: dict[str, Any]) -> float:
    """Billed-equivalent input of a run, from the API's own fields."""
    cached, written = run["tokens_in_cached"], run["tokens_in_cache_write"]
    return billed(run["tokens_in"] - cached - written, written, cached)


def check_api_matches_fake(side: Side) -> None:
    """The run's usage fields are the sum of what the API reported for its calls."""
    for run, calls in zip(side.runs, side.calls, strict=True):
        parts = [usage(call) for call in calls]
        expected = (sum(map(sum, parts)), sum(p[2] for p in parts), sum(p[1] for p in parts))
        got = (run["tokens_in"], run["tokens_in_cached"], run["tokens_in_cache_write"])
        if got != expected:
            raise RuntimeError(f"{side.name}: run usage {got} != sum of calls {expected}")


def render(on: Side, off: Side, rounds: int) -> tuple[str, float]:
    lines = ["## Prompt caching: billed-equivalent input tokens", "",
             f"crew: researcher ({rounds} tool rounds), analyst ({max(rounds // 2, 1)}), "
             f"writer (no tools); {CLAUDE_MODEL}; ~1,200-word instructions; 400-word tool "
             "results; billed = uncached + 1.25 × writes + 0.1 × reads", "",
             "### Per run (from GET /v1/runs/{id})", "",
             "| run | calls | tokens_in | off: billed | on: cached | on: written | on: billed "
             "| on / off |", "|---|---|---|---|---|---|---|---|"]
    for i, (run_on, run_off) in enumerate(zip(on.runs, off.runs, strict=True)):
        if run_on["tokens_in"] != run_off["tokens_in"]:
            raise RuntimeError("tokens_in differs with and without caching")
        b_on, b_off = billed_run(run_on), billed_run(run_off)
        lines.append(f"| run {i + 1} | {len(on.calls[i])} | {run_on['tokens_in']:,} | "
                     f"{b_off:,.0f} | {run_on['tokens_in_cached']:,} | "
                     f"{run_on['tokens_in_cache_write']:,} | {b_on:,.0f} | {b_on / b_off:.2f} |")
    lines += ["", f"### Per round: the researcher's {rounds}-round tool loop, run 1 (cold cache)",
              "", "| call | tokens_in | off: billed | on: uncached | on: written | on: read "
              "| on: billed | on / off |", "|---|---|---|---|---|---|---|---|"]
    researcher_on = [c for c in on.calls[0] if role_of(c.body or {}) == "researcher"]
    researcher_off = [c for c in off.calls[0] if role_of(c.body or {}) == "researcher"]
    total_on = total_off = 0.0
    for i, (call_on, call_off) in enumerate(zip(researcher_on, researcher_off, strict=True)):
        u_on, u_off = usage(call_on), usage(call_off)
        b_on, b_off = billed(*u_on), billed(*u_off)
        total_on, total_off = total_on + b_on, total_off + b_off
        label = f"{i + 1}" + (" (answer)" if i == len(researcher_on) - 1 else "")
        lines.append(f"| {label} | {sum(u_on):,} | {b_off:,.0f} | {u_on[0]:,} | {u_on[1]:,} | "
                     f"{u_on[2]:,} | {b_on:,.0f} | {b_on / b_off:.2f} |")
    ratio = total_on / total_off
    lines.append(f"| **loop** | | **{total_off:,.0f}** | | | | **{total_on:,.0f}** | "
                 f"**{ratio:.2f}** |")
    return "\n".join(lines), ratio


async def run(rounds: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-cost-"))
    try:
        with ToolServer() as tools, FakeAnthropic(default=loop_model,
                                                   cache=PromptCache()) as fake:
            tools.state.reply = json.dumps({"document": DOCUMENT})
            spec = crew_spec(rounds, tools.url("/lookup"))
            started = time.monotonic()
            async with stack(tmp, fake) as apis:
                progress("running the crew with caching off, then on")
                off = await run_side("cache off", apis["cache off"], fake, spec)
                on = await run_side("cache on", apis["cache on"], fake, spec)
            for side in (on, off):
                check_api_matches_fake(side)
            table, ratio = render(on, off, rounds)
        print(table)
        verdict = "PASS" if ratio <= TARGET else "MISS"
        print(f"\ntarget: the {rounds}-round loop costs at most {TARGET:.0%} with caching: "
              f"{ratio:.0%} → {verdict}")
        print(f"command: python -m bench.bench_cost --rounds {rounds}; measured in "
              f"{time.monotonic() - started:.0f} s")
        return 0 if verdict == "PASS" else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, choices=range(1, 101),
                        metavar="1..100", help="tool rounds of the researcher (default 10)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(asyncio.wait_for(run(args.rounds), timeout=110))
    except KeyboardInterrupt:
        progress("interrupted; everything was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
