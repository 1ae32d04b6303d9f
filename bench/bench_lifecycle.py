"""Lifecycle benchmark: cancel, retry from the failed step, and the largest texts.

    python -m bench.bench_lifecycle            # 20 cancels, 10 retries, 12 x 200 KiB
    python -m bench.bench_lifecycle --quick    # 5, 3 and 12 x 50 KiB

- cancel: a run whose model call is in flight (the fake holds it for 30 s); from sending
  `POST /v1/runs/{id}/cancel` until `GET` shows `cancelled`.
- retry: a 3-agent run whose second step failed (the model answered 400 once); from
  sending `POST /v1/runs/{id}/retry` until `GET` shows `completed`.
- large texts: 12 agents each writing the given size; history events and bytes as
  Temporal reports them, and the blob store's size.

Processes as in bench_respond (bench/stack.py): a dev server, `loopllama worker` and
`loopllama api` as children, the fake Messages API in this process.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.bench_runs import CLAUDE_MODEL
from bench.processes import median_ms, pct_ms, plan_main, sync_http
from bench.stack import Stack, loopllama_stack
from core.temporal import connect
from tests.fakes.anthropic_server import FakeAnthropic, system_text


@dataclass(frozen=True)
class Plan:
    """How much to do."""

    cancels: int
    retries: int
    big_agents: int
    big_bytes: int


FULL = Plan(cancels=20, retries=10, big_agents=12, big_bytes=200 * 1024)
QUICK = Plan(cancels=5, retries=3, big_agents=12, big_bytes=50 * 1024)


def for_tag(tag: str, role: str) -> Any:
    marker = f"[{tag}:{role}]"
    return lambda request: marker in system_text(request)


def crew(tag: str, *roles: str) -> list[dict[str, Any]]:
    return [{"role": role, "model": CLAUDE_MODEL, "instructions": f"[{tag}:{role}]"}
            for role in roles]


def wait_status(http: httpx.Client, run_id: str, *statuses: str, within: float = 60) -> dict:
    deadline = time.monotonic() + within
    while True:
        run: dict[str, Any] = http.get(f"/v1/runs/{run_id}").json()["data"]
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} stayed {run['status']}")
        time.sleep(0.005)


def measure_cancel(stack: Stack, fake: FakeAnthropic, count: int) -> list[float]:
    """Seconds from sending cancel to reading `cancelled`, per run."""
    took = []
    with sync_http(stack.url, stack.key) as http:
        for _ in range(count):
            tag = uuid.uuid4().hex[:8]
            fake.reply_text("too late", delay=30, when=for_tag(tag, "writer"))
            workflow = http.post("/v1/workflows", json={
                "name": "cancel bench", "crew": crew(tag, "writer")}).json()["data"]
            run = http.post(f"/v1/workflows/{workflow['id']}/runs",
                            json={"input": "Write slowly."}).json()["data"]
            wait_status(http, run["id"], "running")
            deadline = time.monotonic() + 10
            while fake.count(for_tag(tag, "writer")) == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            start = time.monotonic()
            answer = http.post(f"/v1/runs/{run['id']}/cancel")
            assert answer.status_code == 202, answer.text
            wait_status(http, run["id"], "cancelled")
            took.append(time.monotonic() - start)
    return took


def measure_retry(stack: Stack, fake: FakeAnthropic, count: int) -> list[float]:
    """Seconds from sending retry to reading `completed`, per failed 3-step run."""
    took = []
    with sync_http(stack.url, stack.key) as http:
        for _ in range(count):
            tag = uuid.uuid4().hex[:8]
            fake.reply_text("the plan", when=for_tag(tag, "planner"))
            fake.reply_error(400, message="bad request", when=for_tag(tag, "writer"))
            workflow = http.post("/v1/workflows", json={
                "name": "retry bench", "crew": crew(tag, "planner", "writer", "editor"),
            }).json()["data"]
            run = http.post(f"/v1/workflows/{workflow['id']}/runs",
                            json={"input": "Draft a brief."}).json()["data"]
            wait_status(http, run["id"], "failed")
            fake.reply_text("the draft", when=for_tag(tag, "writer"))
            fake.reply_text("the brief", when=for_tag(tag, "editor"))
            start = time.monotonic()
            answer = http.post(f"/v1/runs/{run['id']}/retry")
            assert answer.status_code == 202, answer.text
            done = wait_status(http, run["id"], "completed", "failed")
            took.append(time.monotonic() - start)
            assert done["status"] == "completed", done["error"]
            assert fake.count(for_tag(tag, "planner")) == 1, "step 1 ran again"
    return took


async def measure_big(stack: Stack, fake: FakeAnthropic, tmp: Path, plan: Plan
                      ) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    roles = [f"author{i:02d}" for i in range(plan.big_agents)]
    for role in roles:
        fake.reply_text(f"{role}: " + "x" * plan.big_bytes, tokens_in=1, tokens_out=1,
                        when=for_tag(tag, role))
    with sync_http(stack.url, stack.key) as http:
        workflow = http.post("/v1/workflows", json={
            "name": "big bench", "crew": crew(tag, *roles)}).json()["data"]
        run = http.post(f"/v1/workflows/{workflow['id']}/runs",
                        json={"input": "Write long reports."}).json()["data"]
        start = time.monotonic()
        done = await asyncio.to_thread(wait_status, http, run["id"], "completed", "failed",
                                       within=300)
        took = time.monotonic() - start
        assert done["status"] == "completed", done["error"]
        body = len(http.get(f"/v1/runs/{run['id']}").content)
    client = await connect(stack.server.address, "default", blob_dir=tmp / "blobs")
    info = (await client.get_workflow_handle(run["id"]).describe()).raw_description
    blobs = sum(f.stat().st_size for f in (tmp / "blobs").rglob("*") if f.is_file())
    return {"seconds": took, "events": info.workflow_execution_info.history_length,
            "history": info.workflow_execution_info.history_size_bytes, "blobs": blobs,
            "body": body}


async def run(plan: Plan) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-lifecycle-"))
    try:
        with FakeAnthropic() as fake:
            async with loopllama_stack(tmp, fake) as stack:
                cancels = await asyncio.to_thread(measure_cancel, stack, fake, plan.cancels)
                retries = await asyncio.to_thread(measure_retry, stack, fake, plan.retries)
                big = await measure_big(stack, fake, tmp, plan)
        print("## lifecycle\n")
        print("| metric | p50 | p90 | n |")
        print("|---|---|---|---|")
        for name, values in (("cancel sent → GET shows cancelled", cancels),
                             ("retry sent → failed 3-step run completed", retries)):
            print(f"| {name} | {median_ms(values):.1f} ms | {pct_ms(values, 90):.1f} ms | "
                  f"{len(values)} |")
        kib = plan.big_bytes // 1024
        print(f"\n## {plan.big_agents} agents x {kib} KiB outputs\n")
        print("| figure | value |")
        print("|---|---|")
        print(f"| trigger → completed | {big['seconds']:.2f} s |")
        print(f"| history events | {big['events']:.0f} |")
        print(f"| history bytes | {big['history']:.0f} |")
        print(f"| blob store bytes | {big['blobs']:.0f} |")
        print(f"| GET /v1/runs/{{id}} body bytes | {big['body']:.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return plan_main(__doc__, run, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
