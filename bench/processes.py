"""Child processes, ports and timing helpers shared by the benchmarks.

Every benchmark starts real LoopLlama processes (`loopllama worker`, `loopllama api`)
as children that die with it, waits for them, and reports medians and percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import math
import os
import signal
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median_ms(values: Sequence[float]) -> float:
    """Median of seconds, in milliseconds."""
    return statistics.median(values) * 1000.0


def pct_ms(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of seconds, in milliseconds."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1] * 1000.0


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (all its threads)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _die_with_parent() -> None:
    # Children get SIGTERM if this process dies without cleaning up (e.g. SIGKILL).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Child:
    """A child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}:\n{self.tail()}")

    async def stop(self, grace: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await asyncio.to_thread(self.process.wait, 5.0)


def start_child(name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )
    return Child(name, process, log)


async def wait_for(
    what: str, check: Callable[[], Awaitable[bool]], within: float, child: Child | None = None,
    *, interval: float = 0.1,
) -> None:
    """Poll `check` until true; fail after `within` seconds (or when `child` died)."""
    deadline = time.monotonic() + within
    while True:
        if child is not None:
            child.check_alive()
        with contextlib.suppress(Exception):
            if await check():
                return
        if time.monotonic() > deadline:
            tail = f"\n{child.tail()}" if child is not None else ""
            raise RuntimeError(f"{what} not ready within {within:.0f}s{tail}")
        await asyncio.sleep(interval)


def child_env(**values: str) -> dict[str, str]:
    """This environment without LoopLlama/Temporal/Anthropic settings, plus `values`."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("LOOPLLAMA_", "TEMPORAL_", "ANTHROPIC_"))
    }
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sync_http(base_url: str, key: str) -> httpx.Client:
    """One keep-alive HTTP/1.1 connection, Nagle off, for sequential latency loops."""
    return httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        transport=httpx.HTTPTransport(socket_options=NODELAY),
        timeout=30.0,
    )


def plan_main(doc: str | None, run: Callable[[Any], Coroutine[Any, Any, None]], full: Any,
              quick: Any, argv: list[str] | None) -> int:
    """The command line of a benchmark with a full and a `--quick` plan."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else "")
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(quick if args.quick else full))
    return 0


async def trigger_all(http: httpx.AsyncClient, crews: list[str], parallel: int = 32,
                      tag: str = "") -> list[str]:
    """Trigger one run per entry of `crews` (crew ids), `parallel` POSTs at a time.

    Each trigger carries an Idempotency-Key, so one that failed in transit (a keep-alive
    connection the server closed just as it was reused) is sent again without starting a
    second run.
    """
    gate = asyncio.Semaphore(parallel)
    tag = tag or uuid.uuid4().hex[:8]

    async def one(i: int, crew_id: str) -> str:
        async with gate:
            for attempt in range(5):
                try:
                    response = await http.post(
                        f"/v1/workflows/{crew_id}/runs", json={"input": f"run {i}"},
                        headers={"Idempotency-Key": f"bench-{tag}-{i}"})
                    response.raise_for_status()
                    return str(response.json()["data"]["id"])
                except httpx.TransportError:
                    await asyncio.sleep(0.1 * (attempt + 1))
            raise RuntimeError(f"trigger {i} kept failing in transit")

    return await asyncio.gather(*(one(i, crew_id) for i, crew_id in enumerate(crews)))
