"""Small HTTP helpers shared by the run tests."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import uvicorn
from temporalio.client import Client

from api.app import create_app
from core.devserver import DevServer, find_temporal_binary
from core.settings import Settings
from tests.conftest import API_KEY, eventually, free_port

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RUN_KEYS = {
    "id", "workflow_id", "status", "input", "output", "error", "total_steps", "tokens_in",
    "tokens_out", "tokens_in_cached", "tokens_in_cache_write", "started_at", "finished_at",
    "created_at", "pending", "pauses",
}
STEP_KEYS = {
    "id", "order", "role", "model", "input", "output", "error", "tokens_in", "tokens_out",
    "tokens_in_cached", "tokens_in_cache_write", "started_at", "finished_at",
}


async def create_workflow(api: httpx.AsyncClient, crew: list[dict[str, Any]],
                          **fields: Any) -> dict[str, Any]:
    """POST a workflow and return its object."""
    response = await api.post("/v1/workflows", json={"name": "test crew", "crew": crew, **fields})
    assert response.status_code == 201, response.text
    created = dict(response.json()["data"])
    # Shown once on create, never by GET: leave it out so the object compares with reads.
    created.pop("webhook_secret", None)
    return created


async def trigger(api: httpx.AsyncClient, workflow_id: str, text: str) -> dict[str, Any]:
    """Trigger a run and return the 202 body's run."""
    response = await api.post(f"/v1/workflows/{workflow_id}/runs", json={"input": text})
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


async def get_run(api: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """GET a run (with steps)."""
    response = await api.get(f"/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def wait_for_status(api: httpx.AsyncClient, run_id: str, *statuses: str,
                          within: float = 30.0) -> dict[str, Any]:
    """Poll the run until its status is one of `statuses`."""

    async def check() -> dict[str, Any] | None:
        run = await get_run(api, run_id)
        return run if run["status"] in statuses else None

    return await eventually(check, within=within)


@contextmanager
def reaped(processes: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """Kill every child process on the way out, whatever happened.

    Reads the list on the way out, so processes appended inside the block are reaped too.
    """
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@asynccontextmanager
async def api_client(settings: Settings, temporal: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The API with `settings`, in process (ASGI), authenticated with the test key."""
    app = create_app(settings, temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


@asynccontextmanager
async def uvicorn_in_thread(settings: Settings) -> AsyncIterator[str]:
    """The real app on a real uvicorn server on 127.0.0.1, in a thread; yields its URL.

    For clients that need real HTTP (the sync SDK, CLI subprocesses). The app makes its
    own Temporal connection in its lifespan, as `loopllama api` does.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning",
            lifespan="on", timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as probe:

            async def healthy() -> bool:
                try:
                    return (await probe.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=20)
        yield url
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


async def temporal_cli(server: DevServer, *args: str, namespace: str = "default") -> str:
    """Run the `temporal` CLI against `server`, as an operator would; its stdout.

    A subprocess awaited without blocking the event loop, so in-process workers go on.
    """
    process = await asyncio.create_subprocess_exec(
        find_temporal_binary(), *args, "--address", server.address, "--namespace", namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()
