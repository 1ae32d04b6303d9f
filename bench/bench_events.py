"""Events benchmark: how fast the event stream and webhooks tell what a run did.

    python -m bench.bench_events            # 30 runs, 100 watchers
    python -m bench.bench_events --quick    # 10 runs, 30 watchers

- step → SSE: a 2-agent run watched over `GET /v1/runs/{id}/events`; from the fake
  Messages API receiving a step's (last) model call, which it answers at once, to the
  watcher reading that step's `step.completed`.
- waiting_input → webhook: a run that pauses at once; from the pause as Temporal
  recorded it (the `run.waiting_input` event's `created_at`) to the local receiver
  accepting the signed delivery.
- watchers: N runs whose model call takes 20 s, each watched by one SSE client; the API
  process's CPU over 10 s of following them, against the same 10 s with none.

Processes as in bench_lifecycle (bench/stack.py); the fake and the receiver in this one.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_runs import CLAUDE_MODEL
from bench.processes import cpu_seconds, median_ms, pct_ms, plan_main
from bench.stack import Stack, loopllama_stack
from tests.fakes.anthropic_server import FakeAnthropic, system_text
from tests.fakes.webhook_receiver import WebhookReceiver

WEBHOOK_KEY = "bench-webhook-key-" + "x" * 32


@dataclass(frozen=True)
class Plan:
    """How much to do."""

    runs: int
    watchers: int


FULL = Plan(runs=30, watchers=100)
QUICK = Plan(runs=10, watchers=30)


def for_tag(tag: str) -> Any:
    return lambda request: f"[{tag}]" in system_text(request)


async def create(http: httpx.AsyncClient, tag: str, roles: int, **fields: Any) -> str:
    response = await http.post("/v1/workflows", json={
        "name": "events bench", **fields,
        "crew": [{"role": f"r{i}", "model": CLAUDE_MODEL, "instructions": f"[{tag}] r{i}"}
                 for i in range(roles)],
    })
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def events(http: httpx.AsyncClient, run_id: str) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, data) of every event, until the stream closes."""
    got = []
    async with http.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                got.append((time.time(), json.loads(line[6:])))
    return got


async def step_to_sse(stack: Stack, fake: FakeAnthropic, runs: int) -> list[float]:
    took = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers={
            "Authorization": f"Bearer {stack.key}"}) as http:
        for _ in range(runs):
            tag = uuid.uuid4().hex[:8]
            workflow = await create(http, tag, 2)
            run_id = (await http.post(f"/v1/workflows/{workflow}/runs",
                                      json={"input": "go"})).json()["data"]["id"]
            told = await events(http, run_id)
            calls = fake.requests_matching(for_tag(tag))
            completed = [at for at, event in told if event["type"] == "step.completed"]
            took += [at - call.received_wall for at, call in zip(completed, calls, strict=True)]
    return took


async def pause_to_webhook(stack: Stack, fake: FakeAnthropic, receiver: WebhookReceiver,
                           runs: int) -> list[float]:
    took = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, headers={
            "Authorization": f"Bearer {stack.key}"}) as http:
        for _ in range(runs):
            tag = uuid.uuid4().hex[:8]
            fake.reply_tool_use("ask_human", {"question": "Go on?"}, when=for_tag(tag))
            workflow = await create(http, tag, 1,
                                    human_in_the_loop={"allow_input_requests": True},
                                    webhooks=[{"url": receiver.url,
                                               "events": ["run.waiting_input"]}])
            run_id = (await http.post(f"/v1/workflows/{workflow}/runs",
                                      json={"input": "go"})).json()["data"]["id"]
            deadline = time.monotonic() + 30
            delivery = None
            while delivery is None and time.monotonic() < deadline:
                delivery = next((d for d in receiver.deliveries()
                                 if json.loads(d.body)["data"]["id"] == run_id), None)
                await asyncio.sleep(0.002)
            assert delivery is not None, "no webhook"
            paused = json.loads(delivery.body)["timestamp"]
            took.append(delivery.received_at - datetime.fromisoformat(
                paused.replace("Z", "+00:00")).timestamp())
            await http.post(f"/v1/runs/{run_id}/cancel")
    return took


async def watcher_cpu(stack: Stack, fake: FakeAnthropic, watchers: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    fake.set_default(None)
    async with httpx.AsyncClient(base_url=stack.url, timeout=120, headers={
            "Authorization": f"Bearer {stack.key}"},
            limits=httpx.Limits(max_connections=watchers + 10)) as http:
        workflow = await create(http, tag, 1)
        for _ in range(watchers):
            fake.reply_text("slow", delay=20, when=for_tag(tag))
        run_ids = [(await http.post(f"/v1/workflows/{workflow}/runs", json={"input": "go"})
                    ).json()["data"]["id"] for _ in range(watchers)]
        idle_start = cpu_seconds(stack.api.pid)
        await asyncio.sleep(5)
        idle = (cpu_seconds(stack.api.pid) - idle_start) / 5
        streams = [asyncio.create_task(events(http, run_id)) for run_id in run_ids]
        await asyncio.sleep(3)  # every watcher connected and caught up
        start = cpu_seconds(stack.api.pid)
        await asyncio.sleep(5)
        following = (cpu_seconds(stack.api.pid) - start) / 5
        for run_id in run_ids:
            await http.post(f"/v1/runs/{run_id}/cancel")
        done = await asyncio.gather(*streams)
        assert all(told and told[-1][1]["type"] == "run.cancelled" for told in done)
    return {"idle": idle, "following": following}


async def run(plan: Plan) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-events-"))
    try:
        with FakeAnthropic() as fake, WebhookReceiver() as receiver:
            async with loopllama_stack(tmp, fake, LOOPLLAMA_WEBHOOK_KEY=WEBHOOK_KEY,
                                       LOOPLLAMA_HTTP_ALLOWLIST="127.0.0.1") as stack:
                sse = await step_to_sse(stack, fake, plan.runs)
                hook = await pause_to_webhook(stack, fake, receiver, plan.runs)
                cpu = await watcher_cpu(stack, fake, plan.watchers)
        print("## events\n")
        print("| metric | p50 | p90 | n |")
        print("|---|---|---|---|")
        for name, values in (("model answered a step → its step.completed read", sse),
                             ("run.waiting_input recorded → webhook accepted", hook)):
            print(f"| {name} | {median_ms(values):.1f} ms | {pct_ms(values, 90):.1f} ms | "
                  f"{len(values)} |")
        print(f"\n## API CPU, {plan.watchers} runs each followed by one SSE watcher\n")
        print("| state | API CPU |")
        print("|---|---|")
        print(f"| runs in flight, no watcher | {cpu['idle'] * 100:.1f}% of a core |")
        print(f"| runs in flight, {plan.watchers} watchers | {cpu['following'] * 100:.1f}% "
              "of a core |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return plan_main(__doc__, run, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
