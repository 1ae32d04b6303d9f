"""Respond benchmark: from `POST /v1/runs/{id}/respond` (202) to the next activity.

    python -m bench.bench_respond              # 100 pauses
    python -m bench.bench_respond --pauses 20  # smoke

One run pauses N times: its (fake) model calls `ask_human` N times, then ends its turn.
For each pause the script waits until the run shows `waiting_input`, answers it over
HTTP, and notes when the 202 arrived; the next activity is the model call that carries
the answer, and the fake Messages API notes when that request arrived (both on this
process's monotonic clock). Processes as in bench_runs: a dev server, `loopllama
worker` and `loopllama api` as children, the fake in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bench_runs import CLAUDE_MODEL
from bench.processes import median_ms, pct_ms, sync_http
from bench.stack import loopllama_stack
from tests.fakes.anthropic_server import FakeAnthropic


def measure(api_url: str, key: str, fake: FakeAnthropic, pauses: int) -> dict[str, list[float]]:
    """Run one workflow through `pauses` pauses; seconds for each answer."""
    tag = uuid.uuid4().hex[:8]
    for i in range(pauses):
        fake.reply_tool_use("ask_human", {"question": f"Question {i}?"},
                            tool_use_id=f"toolu_{tag}_{i}")
    fake.reply_text("All answered.")
    to_activity: list[float] = []
    respond_call: list[float] = []
    with sync_http(api_url, key) as http:
        created = http.post("/v1/workflows", json={
            "name": "respond bench",
            # One tool round per pause: 100 is the most an agent may have.
            "crew": [{"role": "asker", "model": CLAUDE_MODEL, "instructions": f"[{tag}]",
                      "max_tool_rounds": 100}],
            "human_in_the_loop": {"allow_input_requests": True},
        })
        created.raise_for_status()
        run = http.post(f"/v1/workflows/{created.json()['data']['id']}/runs",
                        json={"input": "Ask me questions."})
        run.raise_for_status()
        run_id = run.json()["data"]["id"]
        for i in range(pauses):
            deadline = time.monotonic() + 30
            while (state := http.get(f"/v1/runs/{run_id}").json()["data"])["status"] != (
                "waiting_input"
            ):
                if time.monotonic() > deadline or state["status"] == "failed":
                    raise RuntimeError(f"pause {i} never came: {state['error']}")
                time.sleep(0.002)
            seen = fake.count()
            sent = time.monotonic()
            answer = http.post(f"/v1/runs/{run_id}/respond",
                               json={"action": "input", "input": f"Answer {i}"})
            accepted = time.monotonic()
            if answer.status_code != 202:
                raise RuntimeError(f"respond: {answer.status_code} {answer.text}")
            (next_call,) = fake.wait_for_requests(seen + 1, timeout=30)[seen:seen + 1]
            respond_call.append(accepted - sent)
            to_activity.append(next_call.received_at - accepted)
    return {"to_activity": to_activity, "respond_call": respond_call}


async def run(pauses: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-respond-"))
    try:
        with FakeAnthropic() as fake:
            async with loopllama_stack(tmp, fake) as stack:
                results = await asyncio.to_thread(measure, stack.url, stack.key, fake, pauses)
        report(results, pauses)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict[str, Any], pauses: int) -> None:
    to_activity, call = results["to_activity"], results["respond_call"]
    print(f"## respond → next activity ({pauses} pauses, one run)\n")
    print("| metric | p50 | p90 | p99 |")
    print("|---|---|---|---|")
    for name, values in (("202 received → next model call arrives at the fake", to_activity),
                         ("POST respond round trip (client)", call)):
        print(f"| {name} | {median_ms(values):.1f} ms | {pct_ms(values, 90):.1f} ms | "
              f"{pct_ms(values, 99):.1f} ms |")
    print("\nFor reference (measured-facts): update with validator → next activity ~14 ms "
          "on a bare workflow.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--pauses", type=int, default=100, choices=range(1, 101),
                        metavar="1..100")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.pauses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
