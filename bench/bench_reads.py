"""Reads at scale: GET a run and list a crew's runs with 10,000 finished runs around.

    python -m bench.bench_reads            # 10,000 runs in the namespace (~5-10 minutes)
    python -m bench.bench_reads --quick    # 1,000 runs

One `loopllama worker`, one `loopllama api` and a dev server (bench/stack.py), and the
fake Messages API. It makes a finished 3-step and a 15-step run and a crew with exactly
50 finished runs, then measures (sequential calls on one keep-alive connection):

- `GET /v1/runs/{id}` of the 3-step and of the 15-step run (flat in run length?),
- `GET /v1/workflows/{id}/runs` of the 50-run crew, and of a crew with many more runs,

first with a small namespace, then again after filling it with one-agent runs of other
crews (offline model) up to `--runs` finished runs in all (do the reads grow with the
namespace?). Targets from the performance issue: GET p50 ≤ 5 ms, list p50 ≤ 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bench_runs import REPLY_TEXT, crew
from bench.processes import median_ms, pct_ms, sync_http, trigger_all
from bench.stack import Stack, loopllama_stack
from core.contract import RUN_WORKFLOW_TYPE
from core.temporal import connect
from tests.fakes.anthropic_server import FakeAnthropic, text_reply

CALLS = 200  # sequential calls per figure
FILLER_CREWS = 20
BIG_CREW_SHARE = 0.1  # of the filler runs, the share that goes to the "big" crew


def timed(http: httpx.Client, path: str, calls: int = CALLS) -> list[float]:
    """Seconds per sequential GET of `path` (after a short warm-up)."""
    samples = []
    for i in range(calls + 10):
        start = time.perf_counter()
        response = http.get(path)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        if i >= 10:
            samples.append(elapsed)
    return samples


async def create(http: httpx.AsyncClient, name: str, agents: list[dict[str, Any]]) -> str:
    response = await http.post("/v1/workflows", json={"name": name, "crew": agents})
    response.raise_for_status()
    return str(response.json()["data"]["id"])


async def wait_all_closed(stack: Stack, tmp: Path, within: float) -> int:
    """Wait until no run is open in the namespace; return how many runs it holds."""
    client = await connect(stack.server.address, "default", blob_dir=tmp / "blobs")
    deadline = time.monotonic() + within
    base = f"WorkflowType = '{RUN_WORKFLOW_TYPE}'"
    while (await client.count_workflows(f"{base} AND ExecutionStatus = 'Running'")).count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs still open after {within:.0f} s")
        await asyncio.sleep(1.0)
    # Visibility trails the close a little; the total is what matters.
    await asyncio.sleep(1.0)
    return (await client.count_workflows(base)).count


def measure(stack: Stack, paths: dict[str, str]) -> dict[str, list[float]]:
    with sync_http(stack.url, stack.key) as http:
        return {name: timed(http, path) for name, path in paths.items()}


async def run(total: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-reads-"))
    try:
        with FakeAnthropic(default=lambda _: text_reply(REPLY_TEXT)) as fake:
            async with loopllama_stack(tmp, fake) as stack, httpx.AsyncClient(
                base_url=stack.url, timeout=120,
                headers={"Authorization": f"Bearer {stack.key}"},
                limits=httpx.Limits(max_connections=64),
            ) as http:
                print("[bench] the measured runs", file=sys.stderr)
                three = await create(http, "reads-3", crew(3, "reads-3"))
                fifteen = await create(http, "reads-15", crew(15, "reads-15"))
                fifty = await create(http, "reads-list", crew(3, "reads-list"))
                offline = [{"role": "filler", "model": "loopllama-offline",
                            "instructions": "Say something short."}]
                fillers = [await create(http, f"filler-{i}", offline)
                           for i in range(FILLER_CREWS)]
                run3, run15 = await trigger_all(http, [three, fifteen])
                await trigger_all(http, [fifty] * 50)
                # A small namespace first: the measured runs and a tenth of the fillers.
                small = max(0, total // 10 - 52)
                big = fillers[0]
                targets = [big if i % int(1 / BIG_CREW_SHARE) == 0 else
                           fillers[1 + i % (FILLER_CREWS - 1)] for i in range(total - 52)]
                await trigger_all(http, targets[:small])
                size_small = await wait_all_closed(stack, tmp, 600)
                paths = {
                    "GET 3-step run": f"/v1/runs/{run3}",
                    "GET 15-step run": f"/v1/runs/{run15}",
                    "list, crew of 50 runs": f"/v1/workflows/{fifty}/runs",
                    "list, the biggest crew": f"/v1/workflows/{big}/runs",
                }
                print(f"[bench] reads with {size_small} runs", file=sys.stderr)
                before = measure(stack, paths)
                started = time.monotonic()
                print(f"[bench] filling to {total} runs", file=sys.stderr)
                await trigger_all(http, targets[small:])
                size_big = await wait_all_closed(stack, tmp, 3600)
                fill_rate = (size_big - size_small) / (time.monotonic() - started)
                print(f"[bench] reads with {size_big} runs", file=sys.stderr)
                after = measure(stack, paths)
                big_count = sum(1 for t in targets if t == big)
        print(f"## Reads at scale: {size_small} and then {size_big} finished runs in the "
              "namespace\n")
        print(f"p50 (p99) of {CALLS} sequential calls on one keep-alive connection; the "
              f"biggest crew has {big_count} runs, made over the whole fill.\n")
        print(f"| read | {size_small} runs | {size_big} runs | target |")
        print("|---|---|---|---|")
        targets_ms = {"GET 3-step run": 5, "GET 15-step run": 5, "list, crew of 50 runs": 30,
                      "list, the biggest crew": 30}
        for name, limit in targets_ms.items():
            cells = [f"{median_ms(s[name]):.1f} ms ({pct_ms(s[name], 99):.1f})"
                     for s in (before, after)]
            verdict = "PASS" if max(median_ms(before[name]), median_ms(after[name])) <= limit \
                else "MISS"
            print(f"| {name} | {cells[0]} | {cells[1]} | ≤ {limit} ms {verdict} |")
        print(f"\n- filled at {fill_rate:.0f} runs/s (one-agent runs, offline model)")
        print(f"- command: python -m bench.bench_reads{' --quick' if total < 10_000 else ''}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="1,000 runs instead of 10,000")
    parser.add_argument("--runs", type=int, default=None, help="runs in the namespace")
    args = parser.parse_args(argv)
    total = args.runs or (1_000 if args.quick else 10_000)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
