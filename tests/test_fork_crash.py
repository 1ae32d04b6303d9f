"""A worker killed while a fork's re-run step is calling its model: the fork completes
on the next worker, its reused step is never called, and the source run is untouched."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from temporalio.client import Client

from core.settings import Settings
from tests.conftest import crew, eventually, for_role, start_worker_process, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import api_client, create_workflow, get_run, reaped, trigger, wait_for_status


async def test_a_fork_survives_its_worker_being_killed_mid_call(
    temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic, tmp_path: Path,
) -> None:
    tag = unique_tag()
    planner, writer = for_role(tag, "planner"), for_role(tag, "writer")
    fake_anthropic.reply_text("the plan", when=planner)
    fake_anthropic.reply_text("first draft", when=writer)
    workers: list[subprocess.Popen[bytes]] = []
    with reaped(workers):
        async with api_client(settings, temporal) as api:
            workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
            workers.append(start_worker_process(settings, tmp_path / "worker-1.log"))
            source = await wait_for_status(
                api, (await trigger(api, workflow["id"], "Go."))["id"], "completed", within=60)
            held = threading.Event()
            fake_anthropic.reply_text("never delivered", hold=held, when=writer)
            fake_anthropic.reply_text("second draft", when=writer)
            answer = await api.post(f"/v1/runs/{source['id']}/fork", json={"from": "writer"})
            assert answer.status_code == 202, answer.text
            forked = answer.json()["data"]

            async def writer_called_again() -> bool | None:
                return fake_anthropic.count(writer) >= 2 or None
            await eventually(writer_called_again, within=30)
            workers[-1].kill()
            workers[-1].wait(timeout=10)
            held.set()
            workers.append(start_worker_process(settings, tmp_path / "worker-2.log"))
            done = await wait_for_status(api, forked["id"], "completed", "failed", within=90)
            unchanged = await get_run(api, source["id"])
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "second draft"
    assert fake_anthropic.count(planner) == 1
    assert done["steps"][0]["reused_from"] == source["steps"][0]["id"]
    assert unchanged == source

