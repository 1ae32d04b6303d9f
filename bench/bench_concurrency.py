"""Concurrency benchmark: how many slow model calls one worker holds at once.

    python -m bench.bench_concurrency                  # 400 runs, 6 s calls
    python -m bench.bench_concurrency --runs 1000      # where memory allows
    python -m bench.bench_concurrency --max-activities 100   # the SDK's default, to compare

One `loopllama worker` (LOOPLLAMA_WORKER_MAX_ACTIVITIES) and the fake Messages API.
All runs (one agent each) are triggered; the fake holds every call until all runs have
been triggered and the calls stop arriving, so the number it holds is how many calls the
worker keeps in flight at once, whatever the trigger rate. It then releases them, each
answering `--seconds` later. The table gives that number, the worker's memory before and
while holding them (per call in flight), and runs completed per second from the release
against the ideal (runs ÷ call time: every call in flight at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.bench_runs import CLAUDE_MODEL
from bench.processes import trigger_all
from bench.stack import loopllama_stack
from tests.fakes.anthropic_server import FakeAnthropic, Reply, text_reply


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def status(http: httpx.AsyncClient, run_id: str) -> str | None:
    """The run's status; None when the call failed in transit (a keep-alive connection the
    server closed just as it was reused): the next round asks again."""
    try:
        return str((await http.get(f"/v1/runs/{run_id}")).json()["data"]["status"])
    except httpx.TransportError:
        return None


async def run(runs: int, seconds: float, max_activities: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-concurrency-"))

    release = threading.Event()

    def held(request: dict[str, Any]) -> Reply:
        reply = text_reply("done")
        reply.hold, reply.delay = release, seconds
        return reply

    try:
        with FakeAnthropic(default=held) as fake:
            async with loopllama_stack(
                tmp, fake, LOOPLLAMA_WORKER_MAX_ACTIVITIES=str(max_activities)
            ) as stack:
                async with httpx.AsyncClient(
                    base_url=stack.url, timeout=120,
                    headers={"Authorization": f"Bearer {stack.key}"},
                    limits=httpx.Limits(max_connections=64),
                ) as http:
                    workflow = (await http.post("/v1/workflows", json={
                        "name": "slow", "crew": [{"role": "a", "model": CLAUDE_MODEL,
                                                  "instructions": uuid.uuid4().hex}],
                    })).json()["data"]["id"]
                    rss_before = rss_bytes(stack.worker.pid)
                    pending = set(await trigger_all(http, [workflow] * runs, parallel=64))
                    # Wait until calls stop arriving (or every run has one).
                    held_calls, quiet_since = 0, time.monotonic()
                    while time.monotonic() - quiet_since < 3 and held_calls < runs:
                        await asyncio.sleep(0.2)
                        if fake.count() != held_calls:
                            held_calls, quiet_since = fake.count(), time.monotonic()
                    rss_held = rss_bytes(stack.worker.pid)
                    start = time.time()
                    release.set()
                    deadline = start + 60 + runs * seconds / max(1, max_activities) * 2
                    while pending and time.time() < deadline:
                        batch = list(pending)[:100]
                        got = await asyncio.gather(*(status(http, run_id) for run_id in batch))
                        pending -= {run_id for run_id, state in zip(batch, got, strict=True)
                                    if state == "completed"}
                        await asyncio.sleep(0.2)
                    took = time.time() - start
        done = runs - len(pending)
        print(f"## {runs} runs, one {seconds:g} s model call each, "
              f"LOOPLLAMA_WORKER_MAX_ACTIVITIES={max_activities}\n")
        print("| figure | value |")
        print("|---|---|")
        print(f"| model calls the worker held in flight at once | {held_calls} |")
        print(f"| runs completed after the release | {done} of {runs} in {took:.1f} s |")
        print(f"| runs/s | {done / took:.1f} |")
        print(f"| ideal runs/s (runs ÷ call time) | {runs / seconds:.1f} |")
        print(f"| ratio | {done / took / (runs / seconds):.2f} |")
        print(f"| worker memory: before / holding | {rss_before / 1e6:.0f} MB / "
              f"{rss_held / 1e6:.0f} MB |")
        per_call = (rss_held - rss_before) / max(1, held_calls)
        print(f"| memory per call in flight | {per_call / 1024:.0f} KiB |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--max-activities", type=int, default=1000)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.runs, args.seconds, args.max_activities))
    return 0


if __name__ == "__main__":
    sys.exit(main())
