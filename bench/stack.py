"""A whole LoopLlama stack for a benchmark: dev server, `loopllama worker`, `loopllama api`.

The dev server runs in a temporary directory; worker and API are real child processes
on their own task queue, pointed at the fake Messages API that the benchmark hosts.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.processes import Child, child_env, free_port, start_child, wait_for
from core.devserver import DevServer
from core.temporal import ensure_namespace_ready
from tests.fakes.anthropic_server import FakeAnthropic


@dataclass(frozen=True)
class Stack:
    """What a benchmark talks to."""

    url: str
    key: str
    server: DevServer
    worker: Child
    api: Child


@asynccontextmanager
async def loopllama_stack(tmp: Path, fake: FakeAnthropic, **env: str) -> AsyncIterator[Stack]:
    """Start everything in `tmp` (with `env` for both processes); stop it all on the way
    out."""
    server = DevServer(db_file=tmp / "t.db", log_file=tmp / "t.log", port=free_port(),
                       ui_port=None)
    children: list[Child] = []
    try:
        await ensure_namespace_ready(await server.start())
        common = {
            "TEMPORAL_ADDRESS": server.address,
            "TEMPORAL_TASK_QUEUE": f"bench-{uuid.uuid4().hex[:6]}",
            "LOOPLLAMA_BLOB_DIR": str(tmp / "blobs"),
            **env,
        }
        key = f"bench-{uuid.uuid4().hex}"
        port = free_port()
        py = sys.executable
        worker = start_child("worker", [py, "-m", "cli.main", "worker"],
                             child_env(**common, ANTHROPIC_API_KEY="sk-bench",
                                       ANTHROPIC_BASE_URL=fake.url),
                             tmp / "worker.log")
        children.append(worker)
        api = start_child("api", [py, "-m", "cli.main", "api", "--port", str(port)],
                          child_env(**common, LOOPLLAMA_API_KEY=key), tmp / "api.log")
        children.append(api)
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{url}/health")).status_code == 200

        async def polling() -> bool:
            return "worker polling" in worker.log.read_text(errors="replace")

        await wait_for("worker", polling, 60, worker)
        await wait_for("api", ready, 60, api)
        yield Stack(url, key, server, worker, api)
    finally:
        await asyncio.gather(*(child.stop() for child in children))
        await server.stop()
