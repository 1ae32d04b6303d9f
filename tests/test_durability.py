"""Processes die at bad moments; runs go on and no model call is paid for twice."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from core.devserver import DevServer
from core.settings import Settings
from core.temporal import ensure_namespace_ready
from tests.conftest import (
    API_KEY,
    crew,
    eventually,
    for_role,
    free_port,
    start_worker_process,
    unique_tag,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, get_run, reaped, trigger, wait_for_status
from worker import build_worker


async def test_sigkill_worker_during_step_two(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    tag = unique_tag()
    planner, writer, reviewer = (for_role(tag, r) for r in ("planner", "writer", "reviewer"))
    never = threading.Event()
    fake_anthropic.reply_text("the plan", tokens_in=3, tokens_out=2, when=planner)
    fake_anthropic.reply_text("lost draft", when=writer, hold=never)
    fake_anthropic.reply_text("the draft", tokens_in=5, tokens_out=4, when=writer)
    fake_anthropic.reply_text("the review", tokens_in=7, tokens_out=6, when=reviewer)
    workflow = await create_workflow(api, crew("planner", "writer", "reviewer", tag=tag))

    workers: list[subprocess.Popen[bytes]] = []
    with reaped(workers):
        workers.append(start_worker_process(settings, tmp_path / "worker-1.log"))
        try:
            run = await trigger(api, workflow["id"], "Write it.")

            async def writer_called() -> bool:
                return fake_anthropic.count(writer) == 1

            await eventually(writer_called, within=60)
            workers[0].kill()
            workers[0].wait(timeout=10)
            loop = asyncio.get_running_loop()
            restarted = loop.time()
            workers.append(start_worker_process(settings, tmp_path / "worker-2.log"))
            done = await wait_for_status(api, run["id"], "completed", "failed", within=60)
            elapsed = loop.time() - restarted
        finally:
            never.set()
    assert done["status"] == "completed", done["error"]
    assert elapsed < 30, f"took {elapsed:.1f}s after the new worker started"
    # Step 1 was not called again; step 2 was called once more; step 3 once.
    assert fake_anthropic.count(planner) == 1
    assert fake_anthropic.count(writer) == 2
    assert fake_anthropic.count(reviewer) == 1
    assert [s["output"] for s in done["steps"]] == ["the plan", "the draft", "the review"]
    assert (done["tokens_in"], done["tokens_out"]) == (15, 12)


async def test_temporal_restart_under_worker_and_api(
    settings: Settings, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    server = DevServer(db_file=tmp_path / "t.db", log_file=tmp_path / "t.log",
                       port=free_port(), ui_port=None)
    client = await server.start()
    try:
        await ensure_namespace_ready(client)
        own = replace(settings, temporal_address=server.address)
        tag = unique_tag()
        release = threading.Event()
        fake_anthropic.reply_text("plan", when=for_role(tag, "planner"), hold=release)
        # Should the outage outlast the heartbeat timeout, the call is retried: same answer.
        fake_anthropic.reply_text("plan", when=for_role(tag, "planner"))
        fake_anthropic.reply_text("text", when=for_role(tag, "writer"))
        app = create_app(own)
        async with (
            build_worker(client, own),
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t",
                headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30,
            ) as api,
        ):
            async def healthy() -> bool:
                return (await api.get("/health")).status_code == 200

            await eventually(healthy, within=30)
            workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
            run = await trigger(api, workflow["id"], "x")

            async def planner_called() -> bool:
                return fake_anthropic.count(for_role(tag, "planner")) == 1

            await eventually(planner_called, within=30)

            await server.stop()
            down = await api.get(f"/v1/runs/{run['id']}")
            assert down.status_code == 503, down.text
            assert down.json()["error"]["type"] == "service_unavailable"
            assert (await api.get("/health")).status_code == 503

            await server.start()
            release.set()
            await eventually(healthy, within=60)
            done = await wait_for_status(api, run["id"], "completed", "failed", within=60)
            assert done["status"] == "completed", done["error"]
            assert [s["output"] for s in done["steps"]] == ["plan", "text"]
            assert fake_anthropic.count(for_role(tag, "planner")) <= 2
            assert (await api.get(f"/v1/workflows/{workflow['id']}")).status_code == 200
            assert (await get_run(api, run["id"]))["status"] == "completed"
            # The worker reconnected by itself: a brand-new run completes too.
            again = await trigger(api, workflow["id"], "y")
            assert (await wait_for_status(api, again["id"], "completed", "failed"))[
                "status"
            ] == "completed"
    finally:
        release.set()
        await server.stop()



async def test_sigkill_worker_mid_fan_out(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    tag = unique_tag()
    branches = ("a", "b", "c")
    planner, editor = for_role(tag, "planner"), for_role(tag, "editor")
    never = threading.Event()
    fake_anthropic.reply_text("the plan", tokens_in=1, tokens_out=1, when=planner)
    # a finishes before the kill; b and c are mid call when the worker dies.
    fake_anthropic.reply_text("a out", tokens_in=2, tokens_out=2, when=for_role(tag, "a"))
    for role in ("b", "c"):
        fake_anthropic.reply_text("lost", when=for_role(tag, role), hold=never)
        fake_anthropic.reply_text(f"{role} out", tokens_in=3, tokens_out=3,
                                  when=for_role(tag, role))
    fake_anthropic.reply_text("joined", tokens_in=4, tokens_out=4, when=editor)
    crew_graph: list[dict[str, Any]] = [{"role": "planner", "model": "claude-sonnet-4-6",
                   "instructions": f"You are the planner. [{tag}]"}]
    crew_graph += [{"role": role, "model": "claude-sonnet-4-6", "after": ["planner"],
                    "instructions": f"You are the {role}. [{tag}]"} for role in branches]
    crew_graph.append({"role": "editor", "model": "claude-sonnet-4-6", "after": list(branches),
                       "instructions": f"You are the editor. [{tag}]"})
    workflow = await create_workflow(api, crew_graph)

    workers: list[subprocess.Popen[bytes]] = []
    with reaped(workers):
        workers.append(start_worker_process(settings, tmp_path / "worker-1.log"))
        try:
            run = await trigger(api, workflow["id"], "Fan out.")

            async def mid_fan_out() -> bool:
                steps = (await get_run(api, run["id"]))["steps"]
                a_done = any(s["role"] == "a" and s["output"] for s in steps)
                return a_done and all(
                    fake_anthropic.count(for_role(tag, r)) == 1 for r in ("b", "c"))

            await eventually(mid_fan_out, within=60)
            workers[0].kill()
            workers[0].wait(timeout=10)
            workers.append(start_worker_process(settings, tmp_path / "worker-2.log"))
            done = await wait_for_status(api, run["id"], "completed", "failed", within=60)
        finally:
            never.set()
    assert done["status"] == "completed", done["error"]
    # What completed before the kill was not called again; the calls cut off were.
    assert fake_anthropic.count(planner) == 1
    assert fake_anthropic.count(for_role(tag, "a")) == 1
    assert all(fake_anthropic.count(for_role(tag, r)) == 2 for r in ("b", "c"))
    assert fake_anthropic.count(editor) == 1
    assert done["output"] == "joined"
    assert [s["role"] for s in done["steps"]] == ["planner", "a", "b", "c", "editor"]
    assert (done["tokens_in"], done["tokens_out"]) == (1 + 2 + 6 + 4, 1 + 2 + 6 + 4)
