"""Hardening benchmark: the worst request of each input class, and /health under that load.

    python -m bench.bench_hardening            # 5 requests per class, 15 s load phases
    python -m bench.bench_hardening --quick    # 3 per class, 5 s phases

One `loopllama worker`, one `loopllama api` and a dev server (bench/stack.py), with
LOOPLLAMA_ENCRYPTION_KEY set so `/codec/decode` decrypts. Every figure is a real HTTP
request to the real API process from this process.

1. Per input class, the slowest (and median) of N sequential requests and the status
   they got: custom tool schemas at the limits and just past them, bodies nested at the
   limit and past it, the issue's 20,000-property schema, a 1 MiB body of small values, a
   Last-Event-ID of 5,000 digits, corrupt and unknown-key codec payloads.
2. Load: a few clients keep sending one worst-case body (each sends the next as soon as
   the last is answered) while another client alternates `GET /health` and
   `GET /v1/runs/{id}` on one keep-alive connection; their p50/p99/max.

The bodies are built from this checkout's limits (core/types.py, api/body_guard.py), with
fallbacks so the same file also runs against an older checkout (PYTHONPATH at it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.processes import pct_ms, plan_main, sync_http
from bench.stack import loopllama_stack
from core.encryption import ENCODING, KEY_ID, key_id
from tests.fakes.anthropic_server import FakeAnthropic

try:  # this checkout's limits; an older one had none
    from core.tool_schema import (
        MAX_TOOL_SCHEMA_DEPTH,
        MAX_TOOL_SCHEMA_MEMBERS,
        MAX_TOOLS_SCHEMA_MEMBERS,
    )
except ImportError:
    MAX_TOOL_SCHEMA_DEPTH, MAX_TOOL_SCHEMA_MEMBERS, MAX_TOOLS_SCHEMA_MEMBERS = 32, 2_000, 8_000
try:
    from api.body_guard import MAX_JSON_DEPTH
except ImportError:
    MAX_JSON_DEPTH = 64

MODEL = "loopllama-offline"
ENCRYPTION_KEY = os.urandom(32)


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    requests: int  # sequential requests per input class
    load_seconds: float  # length of each load phase
    load_clients: tuple[int, ...]  # clients sending the worst-case body at once, per phase


FULL = Plan(requests=5, load_seconds=15.0, load_clients=(1, 3))
QUICK = Plan(requests=3, load_seconds=5.0, load_clients=(1, 3))


# ----------------------------------------------------------------------- the bodies


def workflow(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A one-agent workflow offered every tool in `tools`."""
    return {"name": "hardening bench", "tools": tools,
            "crew": [{"role": "agent", "model": MODEL, "tools": [t["name"] for t in tools]}]}


def tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "description": "A tool.", "url": "https://tools.example.com/t",
            "input_schema": schema}


def widest_schema(members: int) -> dict[str, Any]:
    """A schema of exactly `members` members, each an empty subschema: the costliest
    shape to check per member (a pattern per entry, checked as a regex too)."""
    return {"type": "object",
            "patternProperties": {f"^p{i}$": {} for i in range(members - 2)}}


def deepest_schema(depth: int) -> dict[str, Any]:
    """A schema whose objects nest exactly `depth` levels (`properties` chains)."""
    schema: dict[str, Any] = {"type": "object"} if depth % 2 else {"type": "object",
                                                                   "default": {}}
    for _ in range((depth - 1) // 2):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def body_at_depth(depth: int) -> dict[str, Any]:
    """A create body that nests exactly `depth` levels (in a field that wants a string)."""
    return {"name": nested_list(depth - 1), "crew": [{"role": "a", "model": MODEL}]}


def at_limit_tools() -> dict[str, Any]:
    count = MAX_TOOLS_SCHEMA_MEMBERS // MAX_TOOL_SCHEMA_MEMBERS
    return workflow([tool(f"t{i}", widest_schema(MAX_TOOL_SCHEMA_MEMBERS)) for i in range(count)])


def issue_schema() -> dict[str, Any]:
    """The issue's: one tool, 20,000 string properties (about 590 KB)."""
    return workflow([tool("t", {"type": "object", "properties": {
        f"p{i}": {"type": "string"} for i in range(20_000)}})])


def encoded(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def codec_body(key_name: str, data: bytes) -> dict[str, Any]:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return {"payloads": [{"metadata": {"encoding": b64(ENCODING), KEY_ID: b64(key_name.encode())},
                          "data": b64(data)}]}


@dataclass(frozen=True)
class Case:
    """One input class: a request and what it stands for."""

    label: str
    method: str
    path: str  # `{run}`: a finished run's id; `{workflow}`: a workflow at the limits
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


def cases() -> list[Case]:
    json_header = (("Content-Type", "application/json"),)

    def create(label: str, body: Any) -> Case:
        raw = body if isinstance(body, bytes) else encoded(body)
        return Case(f"{label} ({len(raw) // 1024} KiB)", "POST", "/v1/workflows", raw,
                    json_header)

    members, total = MAX_TOOL_SCHEMA_MEMBERS, MAX_TOOLS_SCHEMA_MEMBERS
    per_tool_count = 32
    # 500,000 zeros in an enum: just under the 1 MiB body limit.
    tiny_values = encoded(workflow([tool("t", {"type": "object", "enum": [0] * 500_000})]))
    return [
        create(f"{total // members} tools of {members} members (the total limit)",
               at_limit_tools()),
        Case("PATCH the name of that workflow (the worker checks it all again)", "PATCH",
             "/v1/workflows/{workflow}", encoded({"name": "renamed"}), json_header),
        create(f"{total // members + 1} tools of {members} members (past the total)",
               workflow([tool(f"t{i}", widest_schema(members))
                         for i in range(total // members + 1)])),
        create(f"{per_tool_count} tools of {members} members (past the total)",
               workflow([tool(f"t{i}", widest_schema(members)) for i in range(per_tool_count)])),
        create(f"1 tool of {members + 1} members (past the per-tool limit)",
               workflow([tool("t", widest_schema(members + 1))])),
        create("the issue's 20,000-property tool", issue_schema()),
        create("1 MiB of small values in a schema", tiny_values),
        create(f"tool schema {MAX_TOOL_SCHEMA_DEPTH} levels deep (the limit)",
               workflow([tool("t", deepest_schema(MAX_TOOL_SCHEMA_DEPTH))])),
        create(f"tool schema {MAX_TOOL_SCHEMA_DEPTH + 2} levels deep (past it)",
               workflow([tool("t", deepest_schema(MAX_TOOL_SCHEMA_DEPTH + 2))])),
        create("tool schema 117 properties deep (the issue's)",
               workflow([tool("t", deepest_schema(2 * 117 + 1))])),
        create(f"body {MAX_JSON_DEPTH} levels deep (the limit)", body_at_depth(MAX_JSON_DEPTH)),
        create(f"body {MAX_JSON_DEPTH + 1} levels deep (past it)",
               body_at_depth(MAX_JSON_DEPTH + 1)),
        create("a default 500 levels deep (the issue's)",
               workflow([tool("t", {"type": "object", "default": nested_list(500)})])),
        create("1 MiB of '['", b"[" * (1024 * 1024 - 1)),
        Case("Last-Event-ID of 5,000 digits", "GET", "/v1/runs/{run}/events",
             headers=(("Last-Event-ID", "9" * 5000),)),
        Case("/codec/decode, corrupt ciphertext", "POST", "/codec/decode",
             encoded(codec_body(key_id(ENCRYPTION_KEY), os.urandom(64))), json_header),
        Case("/codec/decode, unknown key id", "POST", "/codec/decode",
             encoded(codec_body("0" * 16, os.urandom(64))), json_header),
    ]


# ------------------------------------------------------------------ measuring


def send(http: httpx.Client, case: Case, run_id: str, workflow_id: str) -> tuple[int, float]:
    """One request: its status and seconds."""
    path = case.path.replace("{run}", run_id).replace("{workflow}", workflow_id)
    start = time.perf_counter()
    response = http.request(case.method, path, content=case.body, headers=dict(case.headers))
    if case.method == "GET":
        response.read()
    return response.status_code, time.perf_counter() - start


def per_class(url: str, key: str, run_id: str, plan: Plan) -> list[tuple[str, str, float, float]]:
    """(label, statuses, median ms, max ms) per input class."""
    rows = []
    with sync_http(url, key) as http:
        http.timeout = httpx.Timeout(120.0)
        created = http.post("/v1/workflows", content=encoded(at_limit_tools()),
                            headers={"Content-Type": "application/json"})
        created.raise_for_status()
        workflow_id = created.json()["data"]["id"]
        for case in cases():
            results = [send(http, case, run_id, workflow_id) for _ in range(plan.requests)]
            statuses = "/".join(sorted({str(status) for status, _ in results}))
            times = [seconds * 1000 for _, seconds in results]
            rows.append((case.label, statuses, statistics.median(times), max(times)))
            print(f"  {case.label}: {statuses} max {max(times):.0f} ms", flush=True)
    return rows


@dataclass
class Probe:
    """Latencies another client sees while the load runs."""

    health: list[float]
    run: list[float]
    no_route: list[float]
    load_done: int
    load_statuses: set[int]


def under_load(url: str, key: str, run_id: str, body: bytes, clients_count: int,
               seconds: float) -> Probe:
    """`clients_count` clients keep POSTing `body`; one more alternates GET /health and
    GET /v1/runs/{id}, for `seconds`."""
    stop = threading.Event()
    done: list[int] = []
    lock = threading.Lock()

    def load() -> None:
        with sync_http(url, key) as http:
            http.timeout = httpx.Timeout(120.0)
            while not stop.is_set():
                try:
                    status = http.post("/v1/workflows", content=body,
                                       headers={"Content-Type": "application/json"}).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    done.append(status)

    clients = [threading.Thread(target=load, name=f"load-{i}") for i in range(clients_count)]
    for client in clients:
        client.start()
    health: list[float] = []
    run: list[float] = []
    no_route: list[float] = []
    try:
        with sync_http(url, key) as http:
            http.timeout = httpx.Timeout(120.0)
            time.sleep(0.5)  # let every load client have a request in flight
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for path, samples in (("/health", health), (f"/v1/runs/{run_id}", run),
                                      ("/v1/no-such-route", no_route)):
                    start = time.perf_counter()
                    status = http.get(path).status_code
                    samples.append(time.perf_counter() - start)
                    if status != (404 if samples is no_route else 200):
                        raise RuntimeError(f"GET {path} answered {status}")
                time.sleep(0.02)
    finally:
        stop.set()
        for client in clients:
            client.join(180)
    return Probe(health, run, no_route, len(done), set(done))


def finished_run(url: str, key: str) -> str:
    """A finished one-step run of the offline model (for GET /v1/runs/{id})."""
    with sync_http(url, key) as http:
        created = http.post("/v1/workflows", json={
            "name": "probe", "crew": [{"role": "a", "model": MODEL}]})
        created.raise_for_status()
        run = http.post(f"/v1/workflows/{created.json()['data']['id']}/runs",
                        json={"input": "Say hi."})
        run.raise_for_status()
        run_id: str = run.json()["data"]["id"]
        deadline = time.monotonic() + 60
        while http.get(f"/v1/runs/{run_id}").json()["data"]["status"] != "completed":
            if time.monotonic() > deadline:
                raise RuntimeError("the probe run did not complete within 60 s")
            time.sleep(0.05)
    return run_id


def load_bodies() -> list[tuple[str, Callable[[], bytes]]]:
    members, total = MAX_TOOL_SCHEMA_MEMBERS, MAX_TOOLS_SCHEMA_MEMBERS
    return [
        (f"{total // members} tools of {members} members (accepted: at the limits)",
         lambda: encoded(at_limit_tools())),
        ("the issue's 20,000-property tool", lambda: encoded(issue_schema())),
    ]




async def run(plan: Plan) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopllama-bench-hardening-"))
    env = {"LOOPLLAMA_ENCRYPTION_KEY": base64.b64encode(ENCRYPTION_KEY).decode()}
    try:
        with FakeAnthropic() as fake:
            async with loopllama_stack(tmp, fake, **env) as stack:
                run_id = await asyncio.to_thread(finished_run, stack.url, stack.key)
                print("per input class:", flush=True)
                rows = await asyncio.to_thread(per_class, stack.url, stack.key, run_id, plan)
                probes = [("idle (no load)", await asyncio.to_thread(
                    under_load, stack.url, stack.key, run_id, b"", 0, 3.0))]
                for label, build in load_bodies():
                    for count in plan.load_clients:
                        print(f"load: {count} × {label}", flush=True)
                        probe = await asyncio.to_thread(under_load, stack.url, stack.key,
                                                        run_id, build(), count,
                                                        plan.load_seconds)
                        probes.append((f"{count} client(s) sending {label}", probe))
        report(rows, probes, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(rows: list[tuple[str, str, float, float]], probes: list[tuple[str, Probe]],
           plan: Plan) -> None:
    print(f"\n## Worst-case request per input class ({plan.requests} sequential requests)\n")
    print("| input | status | median | max |")
    print("|---|---|---|---|")
    for label, statuses, median, worst in rows:
        print(f"| {label} | {statuses} | {median:.0f} ms | {worst:.0f} ms |")
    print(f"\n## Another client during {plan.load_seconds:.0f} s of load\n")
    print("| load | load requests answered | GET /health p50 / p99 / max | "
          "GET /v1/runs/{id} p50 / p99 / max | 404, no Temporal call: p50 / p99 / max |")
    print("|---|---|---|---|---|")
    for label, probe in probes:
        def cell(values: list[float]) -> str:
            if not values:
                return "no answer"
            return (f"{pct_ms(values, 50):.1f} / {pct_ms(values, 99):.1f} / "
                    f"{max(values) * 1000:.1f} ms ({len(values)} calls)")

        statuses = "/".join(str(s) for s in sorted(probe.load_statuses)) or "-"
        print(f"| {label} | {probe.load_done} ({statuses}) | {cell(probe.health)} | "
              f"{cell(probe.run)} | {cell(probe.no_route)} |")


def main(argv: list[str] | None = None) -> int:
    return plan_main(__doc__, run, FULL, QUICK, argv)


if __name__ == "__main__":
    sys.exit(main())
