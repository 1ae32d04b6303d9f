"""Runs benchmark: LoopLlama over HTTP against a bare-Temporal floor, side by side.

    python -m bench.bench_runs            # full: ~2-4 minutes
    python -m bench.bench_runs --quick    # smoke: ~30-60 seconds

What runs (all on 127.0.0.1, all started and stopped by this script):

- a Temporal dev server (`core.devserver.DevServer`: the tuned flags, a SQLite file in a
  temp dir, headless);
- the fake Anthropic Messages API (`tests/fakes/anthropic_server.py`) in this process,
  answering at once with a fixed ~400-character text;
- `loopllama worker` and `loopllama api` as two child processes (the real CLI, a real
  uvicorn server) on their own task queue, pointed at the dev server and the fake;
- a floor worker child process (`bench/floor.py`: 3 no-op activities, SDK defaults).

This process is only the load generator (and hosts the fake). Latency loops use one
keep-alive `httpx.Client` (TCP_NODELAY), sequential calls; the throughput test triggers
every run at once with an aiohttp session whose pool is as large as the batch (an httpx
pool that size costs the load generator ms of CPU per request).
See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from api.services.definitions import Definitions
from api.services.recent_runs import RecentRuns
from api.services.runs import Runs
from bench.floor import READY_LINE, FloorEntityWorkflow, FloorWorkflow
from bench.processes import (
    Child,
    child_env,
    cpu_seconds,
    free_port,
    median_ms,
    pct_ms,
    start_child,
    sync_http,
    wait_for,
)
from bench.profile import Profiler
from bench.profile import report as profile_report
from core.devserver import DevServer, find_temporal_binary
from core.settings import Settings
from core.temporal import SA_WORKFLOW_ID, connect, ensure_namespace_ready
from core.types import TriggerRequest
from tests.fakes.anthropic_server import FakeAnthropic, Reply, system_text, text_reply

CLAUDE_MODEL = "claude-sonnet-4-6"
# Every model call gets this same instant answer, so a 3-step and a 15-step run differ only
# in length (an echo would double the text at every step).
REPLY_TEXT = ("The quick brown fox jumps over the lazy dog. " * 9).strip()
RUN_INPUT = "Draft a 200-word brief on a new feature-flag system."
T = TypeVar("T")
# One series of timed calls: (calls, warm-up calls) -> seconds per call.
Side = Callable[[int, int], Awaitable[list[float]]]


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """How much of everything to do; `--quick` shrinks it."""

    name: str
    latency_runs: int  # sequential runs for start -> completed
    in_flight: int  # runs triggered at once for throughput
    throughput_rounds: int  # floor/LoopLlama pairs; the median round is reported
    read_calls: int  # sequential calls per GET / describe / query series
    list_calls: int  # sequential list calls
    post_calls: int  # sequential POST /v1/workflows (and floor starts)
    long_crew: int = 15  # agents in the "long" run
    long_runs: int = 10  # 15-agent runs (and floor runs of 15 activities) timed end to end
    list_runs: int = 50  # runs behind the list endpoint
    poll_interval: float = 0.005  # pause between GETs while waiting for `completed`
    warmup: int = 3
    # No new throughput round starts once this many seconds went into rounds already.
    throughput_budget: float = 120.0


FULL = Plan("full", latency_runs=30, in_flight=200, throughput_rounds=3, read_calls=300,
            list_calls=60, post_calls=200)
QUICK = Plan("quick", latency_runs=8, in_flight=60, throughput_rounds=1, read_calls=60,
             list_calls=15, post_calls=30, long_runs=4, warmup=2)


# ------------------------------------------------------------------------------ helpers


def parse_ts(value: str | None) -> float:
    """An API timestamp as POSIX seconds."""
    if not value:
        raise ValueError("missing timestamp")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Aborted(Exception):
    """The benchmark is shutting down; loops running in threads stop at the next call."""


def crew(roles: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"role": f"agent{i + 1}", "model": CLAUDE_MODEL,
         "instructions": f"You are agent {i + 1} of the benchmark crew. [{tag}]"}
        for i in range(roles)
    ]


def fixed_reply(request: dict[str, Any]) -> Reply:
    return text_reply(REPLY_TEXT)


# ---------------------------------------------------------------------------- harness


@dataclass
class Bench:
    """Everything a measurement needs, plus what the measurements found."""

    plan: Plan
    api_url: str
    api_key: str
    temporal: Client  # pydantic converter, as LoopLlama's processes use
    floor_client: Client  # SDK default converter, as the floor worker uses
    floor_queue: str
    ll_queue: str
    fake: FakeAnthropic
    pids: dict[str, int]
    abort: threading.Event = field(default_factory=threading.Event)
    open_clients: list[httpx.Client] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # --profile: where py-spy writes, and what it found (markdown lines).
    profile_dir: Path | None = None
    profile_lines: list[str] = field(default_factory=list)

    # -- sync HTTP (runs in a worker thread) -------------------------------------------

    def _check(self) -> None:
        if self.abort.is_set():
            raise Aborted()

    def timed_calls(self, method: str, path: str, calls: int, *, json: Any = None,
                    expect: int = 200, warmup: int = 10,
                    http: httpx.Client | None = None) -> list[float]:
        """`calls` sequential requests on one keep-alive connection; seconds each."""
        with contextlib.ExitStack() as stack:
            if http is None:
                http = stack.enter_context(sync_http(self.api_url, self.api_key))
            samples: list[float] = []
            for i in range(warmup + calls):
                self._check()
                start = time.perf_counter()
                response = http.request(method, path, json=json)
                elapsed = time.perf_counter() - start
                if response.status_code != expect:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
                if i >= warmup:
                    samples.append(elapsed)
            return samples

    def http_side(self, method: str, path: str, *, json: Any = None,
                  expect: int = 200) -> Side:
        """A series of HTTP calls for `interleaved`, on its own keep-alive connection."""
        http = sync_http(self.api_url, self.api_key)
        self.open_clients.append(http)

        async def measure(calls: int, warmup: int) -> list[float]:
            return await self.in_thread(self.timed_calls, method, path, calls, json=json,
                                        expect=expect, warmup=warmup, http=http)

        return measure

    def async_side(self, call: Callable[[], Awaitable[Any]]) -> Side:
        """A series of Temporal client calls for `interleaved`."""

        async def measure(calls: int, warmup: int) -> list[float]:
            return await self.timed_async(call, calls, warmup)

        return measure

    async def interleaved(self, sides: dict[str, Side], calls: int,
                          chunk: int = 25) -> dict[str, list[float]]:
        """`calls` samples of every side, taken in alternating chunks.

        A noisy neighbour's burst then hits every side alike instead of one series.
        """
        samples: dict[str, list[float]] = {name: [] for name in sides}
        done = 0
        while done < calls:
            size = min(chunk, calls - done)
            for name, measure in sides.items():
                samples[name] += await measure(size, 10 if done == 0 else 1)
            done += size
        for http in self.open_clients:
            http.close()
        self.open_clients.clear()
        return samples

    def run_to_completion(self, http: httpx.Client, workflow_id: str, *, follow: str = "stream",
                          within: float = 60.0) -> dict[str, Any]:
        """Trigger one run and wait until it is `completed`; with timings.

        `follow="stream"` reads the run's event stream (GET /v1/runs/{id}/events) until
        `run.completed`, as a client that waits for a run does (the floor's `result()` is
        the same kind of wait); `follow="poll"` GETs the run every `poll_interval`.
        """
        wall0 = time.time()
        t0 = time.perf_counter()
        response = http.post(f"/v1/workflows/{workflow_id}/runs", json={"input": RUN_INPUT})
        t1 = time.perf_counter()
        if response.status_code != 202:
            raise RuntimeError(f"trigger: {response.status_code} {response.text}")
        run_id = response.json()["data"]["id"]
        polls = 0
        t2 = 0.0
        if follow == "stream":
            self._follow_stream(http, run_id, within)
            t2 = time.perf_counter()
        while True:
            self._check()
            got = http.get(f"/v1/runs/{run_id}")
            polls += 1
            run = got.json()["data"]
            if run["status"] == "completed":
                if follow == "poll":
                    t2 = time.perf_counter()
                return {"run": run, "post": t1 - t0, "total": t2 - t0, "wall0": wall0,
                        "wall_seen": wall0 + (t2 - t0), "polls": polls}
            if run["status"] not in ("queued", "running"):
                raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error')}")
            if follow == "stream":
                raise RuntimeError(f"run {run_id} streamed its end but reads {run['status']}")
            if time.perf_counter() - t0 > within:
                raise RuntimeError(f"run {run_id} not completed within {within:.0f}s")
            time.sleep(self.plan.poll_interval)

    def _follow_stream(self, http: httpx.Client, run_id: str, within: float) -> None:
        with http.stream("GET", f"/v1/runs/{run_id}/events", timeout=within) as events:
            if events.status_code != 200:
                raise RuntimeError(f"events: {events.status_code} {events.read()!r}")
            for line in events.iter_lines():
                self._check()
                if line.startswith("event: run."):
                    if line != "event: run.completed" and line != "event: run.started":
                        raise RuntimeError(f"run {run_id}: {line}")
                    if line == "event: run.completed":
                        return
        raise RuntimeError(f"run {run_id}: the event stream closed before run.completed")

    def sequential_runs(self, workflow_id: str, count: int) -> list[dict[str, Any]]:
        with sync_http(self.api_url, self.api_key) as http:
            return [self.run_to_completion(http, workflow_id) for _ in range(count)]

    def create_workflow(self, name: str, agents: list[dict[str, Any]]) -> str:
        with sync_http(self.api_url, self.api_key) as http:
            response = http.post("/v1/workflows", json={"name": name, "crew": agents})
            if response.status_code != 201:
                raise RuntimeError(f"create workflow: {response.status_code} {response.text}")
            return str(response.json()["data"]["id"])

    def wait_all_completed(self, run_ids: list[str], within: float) -> tuple[float, float]:
        """Poll GETs at a modest rate until every run completed.

        Checks runs in trigger order and stops a round at the first one still running
        (runs finish roughly in order), then pauses 10 ms: about one GET per finished run
        plus one per round, so the poller adds little load. Returns (perf_counter when the
        last run was seen completed, the latest `finished_at` among the runs, POSIX).
        """
        pending = list(run_ids)
        last_finished = 0.0
        deadline = time.perf_counter() + within
        with sync_http(self.api_url, self.api_key) as http:
            while pending:
                self._check()
                still: list[str] = []
                for index, run_id in enumerate(pending):
                    run = http.get(f"/v1/runs/{run_id}").json()["data"]
                    if run["status"] == "completed":
                        last_finished = max(last_finished, parse_ts(run["finished_at"]))
                        continue
                    if run["status"] not in ("queued", "running"):
                        raise RuntimeError(f"run {run_id} ended {run['status']}: {run['error']}")
                    still = pending[index:]
                    break
                pending = still
                if pending:
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"{len(pending)} runs not completed in {within:.0f}s")
                    time.sleep(0.01)
            return time.perf_counter(), last_finished

    # -- async helpers -----------------------------------------------------------------

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def timed_async(self, call: Callable[[], Awaitable[Any]], calls: int,
                          warmup: int = 10) -> list[float]:
        samples: list[float] = []
        for i in range(warmup + calls):
            start = time.perf_counter()
            await call()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                samples.append(elapsed)
        return samples

    def cpu_snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @staticmethod
    def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}

    # -- floor ---------------------------------------------------------------------------

    async def floor_start(self, hold: bool, steps: int = 3,
                          **kwargs: Any) -> WorkflowHandle[Any, int]:
        return await self.floor_client.start_workflow(
            FloorWorkflow.run, args=[hold, steps], id=f"floor-{uuid.uuid4().hex}",
            task_queue=self.floor_queue, **kwargs,
        )

    async def floor_once(self, steps: int = 3) -> tuple[float, str]:
        start = time.perf_counter()
        handle = await self.floor_start(False, steps)
        await handle.result()
        return time.perf_counter() - start, handle.id

    async def direct_run(self, workflow_id: str) -> float:
        """A run triggered by the API's own code in this process, awaited with result().

        Same start as POST /v1/workflows/{id}/runs (`api.services.runs.Runs.trigger`), but
        without HTTP and without polling: what the run costs on Temporal alone.
        """
        runs = Runs(self.temporal, Settings(temporal_task_queue=self.ll_queue),
                    Definitions(self.temporal, self.ll_queue), RecentRuns())
        start = time.perf_counter()
        run = await runs.trigger(workflow_id, TriggerRequest(input=RUN_INPUT))
        await self.temporal.get_workflow_handle(run.id).result()
        return time.perf_counter() - start

    async def floor_throughput(self, count: int) -> tuple[float, dict[str, float]]:
        before = self.cpu_snapshot()
        start = time.perf_counter()
        handles = await asyncio.gather(*(self.floor_start(False) for _ in range(count)))
        await asyncio.gather(*(handle.result() for handle in handles))
        elapsed = time.perf_counter() - start
        return count / elapsed, self.cpu_used(before, self.cpu_snapshot())

    # -- LoopLlama throughput -------------------------------------------------------------

    async def loopllama_throughput(self, workflow_id: str, count: int) -> dict[str, Any]:
        # aiohttp, not httpx: an httpx pool of hundreds of connections costs the load
        # generator several ms of CPU per request, taken from the processes measured.
        connector = aiohttp.TCPConnector(limit=count)
        before = self.cpu_snapshot()
        async with aiohttp.ClientSession(
            base_url=self.api_url, connector=connector,
            timeout=aiohttp.ClientTimeout(total=120.0),
            headers={"Authorization": f"Bearer {self.api_key}"},
        ) as http:
            wall0 = time.time()
            start = time.perf_counter()

            async def trigger(i: int) -> str:
                async with http.post(f"/v1/workflows/{workflow_id}/runs",
                                     json={"input": f"{RUN_INPUT} #{i}"}) as response:
                    if response.status != 202:
                        raise RuntimeError(f"trigger: {response.status} {await response.text()}")
                    return str((await response.json())["data"]["id"])

            run_ids = await asyncio.gather(*(trigger(i) for i in range(count)))
            triggered = time.perf_counter()
        seen, last_finished = await self.in_thread(self.wait_all_completed, run_ids, 180.0)
        cpu = self.cpu_used(before, self.cpu_snapshot())
        return {
            "rate": count / (seen - start),
            "rate_server_clock": count / (last_finished - wall0),
            "trigger_phase": triggered - start,
            "elapsed": seen - start,
            "cpu": cpu,
        }


# ------------------------------------------------------------------------ measurements


async def measure(bench: Bench) -> None:
    plan = bench.plan
    r = bench.results

    # Crew definitions used below.
    wf3 = await bench.in_thread(bench.create_workflow, "bench-3", crew(3, "bench-3"))
    hold_tag = f"hold-{uuid.uuid4().hex[:8]}"
    wf_hold = await bench.in_thread(bench.create_workflow, "bench-hold", crew(3, hold_tag))
    wf_long = await bench.in_thread(
        bench.create_workflow, "bench-long", crew(plan.long_crew, "bench-long"))
    wf_list = await bench.in_thread(bench.create_workflow, "bench-list", crew(3, "bench-list"))
    wf_tp = [
        await bench.in_thread(bench.create_workflow, f"bench-tp-{i}", crew(3, f"bench-tp-{i}"))
        for i in range(plan.throughput_rounds)
    ]

    progress("warm-up")
    for _ in range(plan.warmup):
        await bench.floor_once()
    await bench.in_thread(bench.sequential_runs, wf3, plan.warmup)
    for _ in range(plan.warmup):
        await bench.direct_run(wf3)
    await bench.in_thread(bench.sequential_runs, wf_long, 1)

    # 1. Idle latency, floor and LoopLlama alternating so drift hits both alike: 3-agent
    # runs (followed by the event stream, by polling, and in-process) and long runs.
    progress(f"idle latency: {plan.latency_runs} sequential runs each")
    floor_lat: list[float] = []
    floor_long: list[float] = []
    floor_ids: list[str] = []
    direct_lat: list[float] = []
    ll_runs: list[dict[str, Any]] = []
    ll_polled: list[dict[str, Any]] = []
    ll_long: list[dict[str, Any]] = []
    cpu_floor: dict[str, float] = {}
    cpu_ll: dict[str, float] = {}
    with sync_http(bench.api_url, bench.api_key) as http:
        for i in range(plan.latency_runs):
            before = bench.cpu_snapshot()
            latency, floor_id = await bench.floor_once()
            floor_lat.append(latency)
            floor_ids.append(floor_id)
            middle = bench.cpu_snapshot()
            ll_runs.append(await bench.in_thread(bench.run_to_completion, http, wf3))
            after = bench.cpu_snapshot()
            direct_lat.append(await bench.direct_run(wf3))
            ll_polled.append(await bench.in_thread(bench.run_to_completion, http, wf3,
                                                   follow="poll"))
            if i < plan.long_runs:
                floor_long.append((await bench.floor_once(plan.long_crew))[0])
                ll_long.append(await bench.in_thread(bench.run_to_completion, http, wf_long))
            for name, used in bench.cpu_used(before, middle).items():
                cpu_floor[name] = cpu_floor.get(name, 0.0) + used
            for name, used in bench.cpu_used(middle, after).items():
                cpu_ll[name] = cpu_ll.get(name, 0.0) + used
    r["floor_latency"] = median_ms(floor_lat)
    r["ll_latency"] = median_ms([x["total"] for x in ll_runs])
    r["ll_latency_p90"] = pct_ms([x["total"] for x in ll_runs], 90)
    r["ll_poll_latency"] = median_ms([x["total"] for x in ll_polled])
    r["floor_latency_p90"] = pct_ms(floor_lat, 90)
    r["ll_polls"] = statistics.median([x["polls"] for x in ll_polled])
    r["direct_latency"] = median_ms(direct_lat)
    r["ll_long_latency"] = median_ms([x["total"] for x in ll_long])
    r["floor_long_latency"] = median_ms(floor_long)
    extra = plan.long_crew - 3
    r["ll_extra_agent"] = (r["ll_long_latency"] - r["ll_latency"]) / extra
    r["floor_extra_activity"] = (r["floor_long_latency"] - r["floor_latency"]) / extra
    long_run_id = ll_long[-1]["run"]["id"]
    run_breakdown(bench, ll_runs)
    sample = max(1, min(10, len(ll_runs)))
    await history_phases(bench, "floor", bench.floor_client, floor_ids[-sample:])
    await history_phases(bench, "ll", bench.temporal, [x["run"]["id"] for x in ll_runs[-sample:]])
    n = plan.latency_runs
    r.update({f"cpu_idle_ll_{k}": v / n * 1000 for k, v in cpu_ll.items()})
    r.update({f"cpu_idle_floor_{k}": v / n * 1000 for k, v in cpu_floor.items()})
    completed_run_id = ll_runs[-1]["run"]["id"]

    # 2. Throughput with `in_flight` runs at once; rounds alternate who goes first.
    floor_rates: list[float] = []
    ll_results: list[dict[str, Any]] = []
    floor_cpus: list[dict[str, float]] = []
    rounds_started = time.monotonic()
    for round_no in range(plan.throughput_rounds):
        if round_no and time.monotonic() - rounds_started > plan.throughput_budget:
            bench.notes.append(f"throughput: stopped after {round_no} rounds (time budget "
                               f"{plan.throughput_budget:.0f} s; the machine is slow today)")
            break
        progress(f"throughput round {round_no + 1}/{plan.throughput_rounds}: "
                 f"{plan.in_flight} in flight")
        order = ["floor", "ll"] if round_no % 2 == 0 else ["ll", "floor"]
        for who in order:
            await asyncio.sleep(0.5)
            if who == "floor":
                rate, cpu = await bench.floor_throughput(plan.in_flight)
                floor_rates.append(rate)
                floor_cpus.append(cpu)
            else:
                ll_results.append(
                    await bench.loopllama_throughput(wf_tp[round_no], plan.in_flight))
    r["floor_rate"] = statistics.median(floor_rates)
    r["tp_rounds"] = float(len(ll_results))
    r["ll_rate"] = statistics.median([x["rate"] for x in ll_results])
    r["ll_rate_server_clock"] = statistics.median([x["rate_server_clock"] for x in ll_results])
    r["ll_trigger_phase"] = statistics.median([x["trigger_phase"] for x in ll_results]) * 1000
    bench.notes.append(
        "throughput rounds (runs/s): floor "
        + ", ".join(f"{x:.1f}" for x in floor_rates)
        + "; LoopLlama " + ", ".join(f"{x['rate']:.1f}" for x in ll_results)
        + f" (all {plan.in_flight} POSTs answered after a median "
        f"{r['ll_trigger_phase']:.0f} ms)"
    )
    for name in bench.pids:
        r[f"cpu_tp_floor_{name}"] = statistics.median(
            [c[name] for c in floor_cpus]) / plan.in_flight * 1000
        r[f"cpu_tp_ll_{name}"] = statistics.median(
            [x["cpu"][name] for x in ll_results]) / plan.in_flight * 1000

    if bench.profile_dir is not None:
        await profiled_round(bench, wf_tp[-1])

    # 3. Reads of a running run / a running floor workflow, interleaved.
    progress("reads: running")
    release = threading.Event()
    bench.fake.reply_text("held", hold=release,
                          when=lambda body: hold_tag in system_text(body))
    floor_held = await bench.floor_start(True)
    try:
        with sync_http(bench.api_url, bench.api_key) as http:
            response = http.post(f"/v1/workflows/{wf_hold}/runs", json={"input": RUN_INPUT})
            held_run = response.json()["data"]["id"]

        async def model_called() -> bool:
            return bench.fake.count(lambda body: hold_tag in system_text(body)) >= 1

        async def floor_held_ready() -> bool:
            return await floor_held.query(FloorWorkflow.progress) >= 3

        await wait_for("the held run's model call", model_called, 30, interval=0.01)
        await wait_for("held floor workflow", floor_held_ready, 30, interval=0.01)
        held_handle = bench.temporal.get_workflow_handle(held_run)

        async def describe_and_decode() -> None:
            description = await held_handle.describe()
            await description.memo()

        got = await bench.interleaved({
            "ll": bench.http_side("GET", f"/v1/runs/{held_run}"),
            "raw": bench.async_side(describe_and_decode),
            "query": bench.async_side(lambda: floor_held.query(FloorWorkflow.progress)),
            "describe": bench.async_side(floor_held.describe),
        }, plan.read_calls)
    finally:
        release.set()
    r["get_running_p50"], r["get_running_p99"] = median_ms(got["ll"]), pct_ms(got["ll"], 99)
    r["raw_describe_running"] = median_ms(got["raw"])
    r["floor_query_p50"], r["floor_query_p99"] = median_ms(got["query"]), pct_ms(got["query"], 99)
    r["floor_describe_running"] = median_ms(got["describe"])
    await floor_held.signal(FloorWorkflow.release)
    await floor_held.result()

    # 4. Reads of completed runs (3 and 15 steps) / a finished floor workflow.
    progress("reads: completed")
    floor_done = await bench.floor_start(False)
    await floor_done.result()
    sides: dict[str, Side] = {
        "floor describe": bench.async_side(floor_done.describe),
        "floor result": bench.async_side(floor_done.result),
    }
    for key, run_id in (("3", completed_run_id), ("long", long_run_id)):
        handle = bench.temporal.get_workflow_handle(run_id)
        info = (await handle.describe()).raw_description.workflow_execution_info
        r[f"memo{key}_bytes"] = float(sum(len(p.data) for p in info.memo.fields.values()))
        r[f"history{key}_events"] = float(info.history_length)
        r[f"history{key}_bytes"] = float(info.history_size_bytes)
        with sync_http(bench.api_url, bench.api_key) as http:
            r[f"body{key}_bytes"] = float(len(http.get(f"/v1/runs/{run_id}").content))
        sides[f"ll {key}"] = bench.http_side("GET", f"/v1/runs/{run_id}")
        sides[f"raw {key}"] = bench.async_side(handle.describe)
    got = await bench.interleaved(sides, plan.read_calls)
    for key in ("3", "long"):
        samples = got[f"ll {key}"]
        r[f"get_done{key}_p50"], r[f"get_done{key}_p99"] = median_ms(samples), pct_ms(samples, 99)
        r[f"raw_describe_done{key}"] = median_ms(got[f"raw {key}"])
    r["floor_describe_done"] = median_ms(got["floor describe"])
    r["floor_result_done"] = median_ms(got["floor result"])

    # 5. Definitions: GET one / describe a running entity; POST new ones / start entities.
    progress("definitions")
    entities: list[WorkflowHandle[Any, None]] = []

    async def floor_start_entity() -> None:
        entities.append(await bench.floor_client.start_workflow(
            FloorEntityWorkflow.run, id=f"floor-entity-{uuid.uuid4().hex}",
            task_queue=bench.floor_queue))

    await floor_start_entity()
    entity = entities[0]
    got = await bench.interleaved({
        "ll": bench.http_side("GET", f"/v1/workflows/{wf3}"),
        "floor": bench.async_side(entity.describe),
    }, plan.read_calls)
    r["get_workflow_p50"] = median_ms(got["ll"])
    r["floor_describe_entity"] = median_ms(got["floor"])
    body = {"name": "bench-post", "crew": crew(3, "bench-post")}
    got = await bench.interleaved({
        "ll": bench.http_side("POST", "/v1/workflows", json=body, expect=201),
        "floor": bench.async_side(floor_start_entity),
    }, plan.post_calls, chunk=10)
    r["post_workflow_p50"] = median_ms(got["ll"])
    r["floor_start_p50"] = median_ms(got["floor"])
    await asyncio.gather(*(h.signal(FloorEntityWorkflow.release) for h in entities))
    await asyncio.gather(*(h.result() for h in entities))

    # Time for a started workflow to show up in list queries (what POSTs wait for).
    lags: list[float] = []
    for _ in range(min(20, plan.post_calls)):
        handle = await bench.floor_start(True)
        start = time.perf_counter()
        while not (await bench.floor_client.count_workflows(f"WorkflowId = '{handle.id}'")).count:
            if time.perf_counter() - start > 10:
                raise RuntimeError("a started workflow never became visible")
        lags.append(time.perf_counter() - start)
        await handle.signal(FloorWorkflow.release)
    r["visibility_lag"] = median_ms(lags)
    count_samples = await bench.timed_async(
        lambda: bench.floor_client.count_workflows("WorkflowId = 'nothing-here'"),
        plan.read_calls // 3)
    r["raw_count"] = median_ms(count_samples)

    # 6. Lists: 50 runs behind the endpoint; 50 floor rows by the same kind of query.
    progress("lists")
    await bench.in_thread(run_batch, bench, wf_list, plan.list_runs)
    floor_tag = f"floor-list-{uuid.uuid4().hex[:8]}"
    attrs = TypedSearchAttributes([SearchAttributePair(SA_WORKFLOW_ID, floor_tag)])
    handles = await asyncio.gather(*(bench.floor_start(False, search_attributes=attrs)
                                     for _ in range(plan.list_runs)))
    await asyncio.gather(*(h.result() for h in handles))
    query_text = f"WorkflowType = 'BenchFloor' AND {SA_WORKFLOW_ID.name} = '{floor_tag}'"

    async def floor_rows_listed() -> bool:
        done = await bench.floor_client.count_workflows(
            query_text + " AND ExecutionStatus = 'Completed'")
        return done.count >= plan.list_runs

    await wait_for("floor list rows", floor_rows_listed, 30, interval=0.05)

    async def floor_list() -> None:
        rows = [row async for row in bench.floor_client.list_workflows(query_text,
                                                                       page_size=100)]
        assert len(rows) == plan.list_runs, len(rows)

    got = await bench.interleaved({
        "ll": bench.http_side("GET", f"/v1/workflows/{wf_list}/runs"),
        "floor": bench.async_side(floor_list),
    }, plan.list_calls, chunk=10)
    r["list50_p50"] = median_ms(got["ll"])
    r["floor_list50"] = median_ms(got["floor"])
    samples = await bench.in_thread(bench.timed_calls, "GET",
                                    f"/v1/workflows/{wf_tp[-1]}/runs",
                                    max(5, plan.list_calls // 3), warmup=2)
    r["list_big_p50"] = median_ms(samples)

    # 7. Baselines for the HTTP layer: no Temporal call / one trivial gRPC call.
    progress("HTTP baselines")
    samples = await bench.in_thread(bench.timed_calls, "GET", "/v1/no-such-route",
                                    plan.read_calls, expect=404)
    r["http_404"] = median_ms(samples)
    samples = await bench.in_thread(bench.timed_calls, "GET", "/health", plan.read_calls)
    r["http_health"] = median_ms(samples)
    model_calls = [q for q in bench.fake.requests if q.responded_at is not None]
    r["fake_call"] = median_ms([q.responded_at - q.received_at for q in model_calls
                                if q.responded_at is not None])


async def profiled_round(bench: Bench, workflow_id: str) -> None:
    """One more throughput round, untimed, with py-spy recording the API and the worker
    (sampling slows them a little, so this round's figures are not reported)."""
    assert bench.profile_dir is not None
    progress(f"profiled round: {bench.plan.in_flight} in flight, py-spy on the api and worker")
    profiler = Profiler(bench.profile_dir, {
        name: pid for name, pid in bench.pids.items() if name in ("api", "ll worker")})
    if profiler.missing:
        bench.profile_lines.append(profiler.missing)
        return
    await profiler.start()
    try:
        await bench.loopllama_throughput(workflow_id, bench.plan.in_flight)
    finally:
        profiles = await profiler.stop()
    bench.profile_lines.extend(profile_report(profiles))


def run_batch(bench: Bench, workflow_id: str, count: int) -> None:
    """Trigger `count` runs (sequential POSTs), then wait until all completed."""
    with sync_http(bench.api_url, bench.api_key) as http:
        ids = []
        for i in range(count):
            response = http.post(f"/v1/workflows/{workflow_id}/runs",
                                 json={"input": f"{RUN_INPUT} #{i}"})
            ids.append(response.json()["data"]["id"])
    bench.wait_all_completed(ids, 120.0)


async def history_phases(bench: Bench, key: str, client: Client, ids: list[str]) -> None:
    """Median phases of a run from its Temporal history (server timestamps)."""
    phases: dict[str, list[float]] = {"wft_queued": [], "wft_worker": [], "activity": []}
    events: list[float] = []
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        events.append(len(history.events))
        last: dict[str, float] = {}
        for event in history.events:
            at = event.event_time.ToDatetime().timestamp()
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                last["wft"] = at
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                phases["wft_queued"].append(at - last["wft"])
                last["wft_started"] = at
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                phases["wft_worker"].append(at - last["wft_started"])
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                last["activity"] = at
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                phases["activity"].append(at - last["activity"])
    for name, values in phases.items():
        bench.results[f"hist_{key}_{name}"] = median_ms(values)
    bench.results[f"hist_{key}_events"] = statistics.median(events)


def run_breakdown(bench: Bench, runs: list[dict[str, Any]]) -> None:
    """Where an idle run's time goes, from the run's own timestamps (ms resolution)."""
    parts: dict[str, list[float]] = {
        "post": [], "to_started": [], "step": [], "finished_to_seen": [], "sent_to_created": [],
    }
    for item in runs:
        run = item["run"]
        created, started = parse_ts(run["created_at"]), parse_ts(run["started_at"])
        finished = parse_ts(run["finished_at"])
        parts["post"].append(item["post"])
        parts["sent_to_created"].append(created - item["wall0"])
        parts["to_started"].append(started - created)
        parts["finished_to_seen"].append(item["wall_seen"] - finished)
        for step in run["steps"]:
            parts["step"].append(parse_ts(step["finished_at"]) - parse_ts(step["started_at"]))
    for name, values in parts.items():
        bench.results[f"bd_{name}"] = median_ms(values)


# ----------------------------------------------------------------------------- report


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    metric: str
    ours: float
    floor: float | None
    unit: str
    target: str
    ok: bool | None


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "/s":
        return f"{value:.1f}/s"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def build_rows(plan: Plan, r: dict[str, float]) -> list[Row]:
    lat_ratio = r["ll_latency"] / r["floor_latency"]
    rate_ratio = r["ll_rate"] / r["floor_rate"]
    extra_ratio = r["ll_extra_agent"] / r["floor_extra_activity"]
    poll = f"{plan.poll_interval * 1000:.0f} ms"
    return [
        Row(f"3-agent run: POST trigger → `run.completed` on the run's event stream, p50 of "
            f"{plan.latency_runs} sequential (floor: start → result())",
            r["ll_latency"], r["floor_latency"], "ms", "≤ 1.3× floor", lat_ratio <= 1.3),
        Row(f"3-agent run: POST trigger → `completed` seen by GET every {poll}, p50",
            r["ll_poll_latency"], r["floor_latency"], "ms", "—", None),
        Row(f"each extra agent: ({plan.long_crew}-agent run − 3-agent run) ÷ "
            f"{plan.long_crew - 3}, p50s (floor: the same with no-op activities)",
            r["ll_extra_agent"], r["floor_extra_activity"], "ms", "≤ 1.2× floor",
            extra_ratio <= 1.2),
        Row(f"throughput, {plan.in_flight} in flight, first trigger → last completion "
            f"(median of {r['tp_rounds']:.0f} rounds)",
            r["ll_rate"], r["floor_rate"], "/s", "≥ 0.8× floor", rate_ratio >= 0.8),
        Row("GET /v1/runs/{id}, RUNNING run, p50 (floor: query on a running workflow)",
            r["get_running_p50"], r["floor_query_p50"], "ms", "≤ 10 ms",
            r["get_running_p50"] <= 10),
        Row("GET /v1/runs/{id}, RUNNING run, p99 (floor: query)",
            r["get_running_p99"], r["floor_query_p99"], "ms", "—", None),
        Row("GET /v1/runs/{id}, COMPLETED 3-step run, p50 (floor: describe() a finished one)",
            r["get_done3_p50"], r["floor_describe_done"], "ms", "≤ 5 ms",
            r["get_done3_p50"] <= 5),
        Row("GET /v1/runs/{id}, COMPLETED 3-step run, p99",
            r["get_done3_p99"], None, "ms", "—", None),
        Row(f"GET /v1/runs/{{id}}, COMPLETED {plan.long_crew}-step run, p50 (floor: "
            "describe() a finished one)",
            r["get_donelong_p50"], r["floor_describe_done"], "ms", "≤ 5 ms",
            r["get_donelong_p50"] <= 5),
        Row(f"GET /v1/runs/{{id}}, COMPLETED {plan.long_crew}-step run, p99",
            r["get_donelong_p99"], None, "ms", "—", None),
        Row(f"GET /v1/workflows/{{id}}/runs, {plan.list_runs} runs listed, p50 (floor: "
            f"list_workflows by a search attribute, {plan.list_runs} rows)",
            r["list50_p50"], r["floor_list50"], "ms", "≤ 30 ms", r["list50_p50"] <= 30),
        Row(f"GET /v1/workflows/{{id}}/runs of a workflow with {plan.in_flight} runs made "
            "in one burst, p50", r["list_big_p50"], None, "ms", "≤ 30 ms",
            r["list_big_p50"] <= 30),
        Row("GET /v1/workflows/{id}, p50 (floor: describe() a running entity)",
            r["get_workflow_p50"], r["floor_describe_entity"], "ms", "—", None),
        Row("POST /v1/workflows, p50 (floor: start_workflow() of a waiting entity)",
            r["post_workflow_p50"], r["floor_start_p50"], "ms", "—", None),
    ]


def render_table(rows: list[Row]) -> str:
    lines = ["| metric | LoopLlama | floor | ratio | target | |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "—" if row.floor in (None, 0) else f"{row.ours / row.floor:.2f}×"
        verdict = "" if row.ok is None else ("PASS" if row.ok else "MISS")
        lines.append(f"| {row.metric} | {fmt(row.ours, row.unit)} | {fmt(row.floor, row.unit)} "
                     f"| {ratio} | {row.target} | {verdict} |")
    return "\n".join(lines)


def render_details(plan: Plan, r: dict[str, float], pids: dict[str, int]) -> str:
    def ms(key: str) -> str:
        return fmt(r.get(key), "ms")

    lines = [
        "Where the time goes (medians):",
        f"- idle 3-agent run: POST {ms('bd_post')} (send → created_at "
        f"{ms('bd_sent_to_created')}), created_at → started_at {ms('bd_to_started')}, "
        f"per step {ms('bd_step')} (activity scheduled → model answered → next workflow "
        f"task), finished_at → `run.completed` read from the stream "
        f"{ms('bd_finished_to_seen')}; p90 {ms('ll_latency_p90')} "
        f"(floor p90 {ms('floor_latency_p90')}); followed by polling instead, "
        f"{ms('ll_poll_latency')} with {r['ll_polls']:.0f} GETs per run.",
        f"- the same run triggered in this process by the API's own code (Runs.trigger, "
        f"then result() long-poll; no HTTP): {ms('direct_latency')}, so HTTP "
        f"and the stream add "
        f"{r['ll_latency'] - r['direct_latency']:.0f} ms and the run itself "
        f"{r['direct_latency'] - r['floor_latency']:.0f} ms over the floor.",
        f"- from the histories (server clock), LoopLlama vs floor: "
        f"{r['hist_ll_events']:.0f} vs {r['hist_floor_events']:.0f} events per run; workflow "
        f"task queued {ms('hist_ll_wft_queued')} vs {ms('hist_floor_wft_queued')}, on the "
        f"worker {ms('hist_ll_wft_worker')} vs {ms('hist_floor_wft_worker')}; activity "
        f"scheduled → completed {ms('hist_ll_activity')} (model call) vs "
        f"{ms('hist_floor_activity')} (no-op).",
        f"- {plan.long_crew}-agent run end to end: {ms('ll_long_latency')} (floor, "
        f"{plan.long_crew} no-op activities: {ms('floor_long_latency')}).",
        f"- fake model call inside the fake server: {ms('fake_call')}.",
        f"- HTTP layer: authenticated 404 (no Temporal call) {ms('http_404')}; /health (one "
        f"trivial gRPC call) {ms('http_health')}.",
        f"- GET running run {ms('get_running_p50')} vs the same describe()+memo decode "
        f"from this process {ms('raw_describe_running')}; floor describe() of a running "
        f"workflow {ms('floor_describe_running')}.",
        f"- completed 3-step run: memo {r['memo3_bytes'] / 1024:.1f} KiB, history "
        f"{r['history3_events']:.0f} events / {r['history3_bytes'] / 1024:.0f} KiB, raw "
        f"describe {ms('raw_describe_done3')}, GET {ms('get_done3_p50')} "
        f"({r['body3_bytes'] / 1024:.1f} KiB body).",
        f"- completed {plan.long_crew}-step run: memo {r['memolong_bytes'] / 1024:.1f} KiB, "
        f"history {r['historylong_events']:.0f} events / "
        f"{r['historylong_bytes'] / 1024:.0f} KiB, raw describe {ms('raw_describe_donelong')}, "
        f"GET {ms('get_donelong_p50')} ({r['bodylong_bytes'] / 1024:.1f} KiB body).",
        f"- floor result() on a finished workflow {ms('floor_result_done')}.",
        f"- POST /v1/workflows {ms('post_workflow_p50')} vs floor start {ms('floor_start_p50')}: "
        f"a start shows up in list queries after {ms('visibility_lag')} (tight "
        f"count_workflows loop; one count = {ms('raw_count')}).",
        f"- throughput by the runs' own finished_at: {r['ll_rate_server_clock']:.1f}/s.",
        "",
        "CPU per workflow (ms of CPU, by process):",
        "| phase | " + " | ".join(pids) + " | total |",
        "|---|" + "---|" * (len(pids) + 1),
    ]
    for label, prefix in (
        ("floor, idle sequential", "cpu_idle_floor_"),
        ("LoopLlama, idle sequential", "cpu_idle_ll_"),
        (f"floor, {plan.in_flight} in flight", "cpu_tp_floor_"),
        (f"LoopLlama, {plan.in_flight} in flight", "cpu_tp_ll_"),
    ):
        used = [r.get(prefix + name, float("nan")) for name in pids]
        lines.append(f"| {label} | " + " | ".join(f"{x:.1f}" for x in used)
                     + f" | {sum(used):.1f} |")
    return "\n".join(lines)


def machine() -> str:
    try:
        version = subprocess.run(
            [find_temporal_binary(), "--version"], capture_output=True, text=True, timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        version = f"unknown ({err})"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: nproc {os.cpu_count()}, Python {platform.python_version()}, "
            f"{version}, load average before the run {load}")


# --------------------------------------------------------------------------- lifecycle


async def run(plan: Plan, keep: bool, encrypt: bool = False, profile: bool = False) -> int:
    # SIGTERM cleans up like Ctrl-C: cancel this task, so every `finally` below runs.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    header = machine()
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-"))
    children: list[Child] = []
    failed = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            fake = FakeAnthropic(default=fixed_reply)
            fake.start()
            stack.callback(fake.stop)

            server = DevServer(db_file=tmp / "temporal.db", log_file=tmp / "temporal.log",
                               port=free_port(), ui_port=None)
            stack.push_async_callback(server.stop)
            progress(f"starting the Temporal dev server in {tmp}")
            temporal = await server.start()
            await ensure_namespace_ready(temporal)
            assert server.process is not None
            key = base64.b64encode(os.urandom(32)) if encrypt else None
            temporal = await connect(server.address, "default", blob_dir=tmp / "blobs",
                                     encryption_keys=[base64.b64decode(key)] if key else [])
            floor_client = await Client.connect(server.address)

            async def stop_children() -> None:
                await asyncio.gather(*(child.stop() for child in children))

            stack.push_async_callback(stop_children)
            api_key = f"bench-{uuid.uuid4().hex}"
            api_port = free_port()
            ll_queue = f"bench-ll-{uuid.uuid4().hex[:8]}"
            floor_queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
            common = {"TEMPORAL_ADDRESS": server.address, "TEMPORAL_TASK_QUEUE": ll_queue,
                      "LOOPLLAMA_BLOB_DIR": str(tmp / "blobs"),
                      # --encrypt: payloads encrypted at rest, as LOOPLLAMA_ENCRYPTION_KEY does.
                      **({"LOOPLLAMA_ENCRYPTION_KEY": key.decode()} if key else {})}
            py = sys.executable
            worker = start_child(
                "loopllama worker", [py, "-m", "cli.main", "worker"],
                child_env(**common, ANTHROPIC_API_KEY="sk-ant-bench",
                          ANTHROPIC_BASE_URL=fake.url),
                tmp / "worker.log")
            children.append(worker)
            api = start_child(
                "loopllama api",
                [py, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port", str(api_port)],
                child_env(**common, LOOPLLAMA_API_KEY=api_key), tmp / "api.log")
            children.append(api)
            floor = start_child(
                "floor worker",
                [py, "-m", "bench.floor", "--address", server.address, "--task-queue",
                 floor_queue],
                child_env(), tmp / "floor.log")
            children.append(floor)
            api_url = f"http://127.0.0.1:{api_port}"

            async def api_ready() -> bool:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    return (await http.get(f"{api_url}/health")).status_code == 200

            def log_says(child: Child, text: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return text in child.log.read_text(errors="replace")
                return check

            await wait_for("loopllama worker", log_says(worker, "worker polling"), 60, worker)
            await wait_for("floor worker", log_says(floor, READY_LINE), 60, floor)
            await wait_for("loopllama api", api_ready, 60, api)

            pids = {"temporal": server.process.pid, "api": api.pid, "ll worker": worker.pid,
                    "floor worker": floor.pid, "bench+fake": os.getpid()}
            bench: Bench = Bench(plan=plan, api_url=api_url, api_key=api_key, temporal=temporal,
                          floor_client=floor_client, floor_queue=floor_queue,
                          ll_queue=ll_queue, fake=fake,
                          pids=pids, profile_dir=tmp if profile else None)
            started = time.monotonic()
            try:
                await asyncio.wait_for(measure(bench), timeout=600)
            finally:
                bench.abort.set()
                for http in bench.open_clients:
                    http.close()
            for child in children:
                child.check_alive()
            elapsed = time.monotonic() - started

            print()
            print(f"## LoopLlama runs benchmark ({plan.name})")
            print()
            print(header)
            print("(the machine is shared: other jobs may have been running; read ratios, "
                  "not absolutes)")
            print()
            print(render_table(build_rows(plan, bench.results)))
            print()
            print(render_details(plan, bench.results, pids))
            print()
            for note in bench.notes:
                print(f"- {note}")
            if bench.profile_lines:
                print()
                print("Profile of an extra, untimed throughput round (py-spy, share of each "
                      "process's busy samples; inclusive = on the stack):")
                print("\n".join(bench.profile_lines))
                print()
            flag = " --quick" if plan.name == "quick" else ""
            flag += " --encrypt" if encrypt else ""
            flag += " --profile" if profile else ""
            print(f"- command: python -m bench.bench_runs{flag}")
            print(f"- measured in {elapsed:.0f} s; processes: temporal dev server (SQLite "
                  "WAL file, tuned flags), `loopllama api` (uvicorn), `loopllama worker`, "
                  "floor worker, this process (load generator + fake Anthropic).")
    except Exception:
        failed = True
        for child in children:
            if child.process.returncode not in (None, 0, -signal.SIGTERM):
                print(f"--- {child.name} log ---\n{child.tail()}", file=sys.stderr)
        raise
    finally:
        if keep or failed:
            progress(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts (~30-60 s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with logs")
    parser.add_argument("--encrypt", action="store_true",
                        help="with LOOPLLAMA_ENCRYPTION_KEY set (payloads encrypted)")
    parser.add_argument("--profile", action="store_true",
                        help="add an untimed throughput round profiled with py-spy")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(QUICK if args.quick else FULL, args.keep, args.encrypt,
                               args.profile))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted; everything was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
