"""A crew mixing Claude, `openai/…` and a named provider, with an MCP tool and an
approval, survives its worker being killed twice (mid-MCP call, then while it waits for
the approval) with no model call paid twice and the MCP call repeated only with the
same idempotency key."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
from temporalio.client import Client

from core.settings import Secret, Settings
from tests.conftest import start_worker_process, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.mcp_server import FakeMcpServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.smtp_server import FakeSmtp
from tests.helpers import api_client, create_workflow, reaped, trigger, wait_for_status
from tests.test_providers import mixed_crew, script_mixed_crew, with_providers


def kill(worker: subprocess.Popen[bytes]) -> None:
    worker.kill()
    worker.wait(timeout=10)


async def test_a_mixed_crew_survives_worker_kills_paying_for_no_call_twice(
    temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic,
    openai_api: FakeOpenAI, local_model: FakeOpenAI, mcp_server: FakeMcpServer,
    smtp: FakeSmtp, tmp_path: Path,
) -> None:
    own = with_providers(settings, openai_api, local_model, smtp_url=Secret(smtp.url))
    tag = unique_tag()
    script_mixed_crew(tag, fake_anthropic, openai_api, local_model, tool="held_lookup")
    claude_before = len(fake_anthropic.requests)
    workers: list[subprocess.Popen[bytes]] = []
    with reaped(workers):
        async with api_client(own, temporal) as api:
            workflow = await create_workflow(
                api, mixed_crew(tag), mcp_servers=[{"name": "crm", "url": mcp_server.url}],
                human_in_the_loop={"approval_required_tools": ["send_email"]})
            workers.append(start_worker_process(own, tmp_path / "worker-1.log"))
            run = await trigger(api, workflow["id"], "Tell Ada about her plan.")
            # Killed while the researcher's MCP call is in flight.
            assert await asyncio.to_thread(mcp_server.reached.wait, 60)
            kill(workers[-1])
            mcp_server.release.set()
            workers.append(start_worker_process(own, tmp_path / "worker-2.log"))
            waiting = await wait_for_status(api, run["id"], "waiting_input", within=90)
            # Killed while the run waits for the approval: a wait holds no worker.
            kill(workers[-1])
            answered = await api.post(f"/v1/runs/{run['id']}/respond", json={
                "action": "approve", "pause_id": waiting["pending"]["id"]})
            assert answered.status_code in (202, 503), answered.text
            workers.append(start_worker_process(own, tmp_path / "worker-3.log"))
            if answered.status_code == 503:
                answered = await respond_until_taken(api, run["id"], waiting["pending"]["id"])
            done = await wait_for_status(api, run["id"], "completed", "failed", within=90)
    assert done["status"] == "completed", done["error"]
    assert done["output"] == "Sent."
    # Every model call once: the planner's, the researcher's two rounds, the writer's two.
    assert len(fake_anthropic.requests) - claude_before == 1
    assert len(openai_api.requests) == 2
    assert len(local_model.requests) == 2
    # The MCP call in flight at the kill was repeated, with the same identity.
    calls = mcp_server.calls
    assert [call.tool for call in calls] == ["held_lookup", "held_lookup"]
    assert calls[0].meta["idempotency_key"] == calls[1].meta["idempotency_key"] == (
        f"{run['id']}:1:0:0")
    [mail] = smtp.messages()
    assert mail.recipients == ["ada@example.com"]


async def respond_until_taken(api: httpx.AsyncClient, run_id: str,
                              pause_id: str) -> httpx.Response:
    """Send the answer again (with its pause id) until the run took it."""
    for _ in range(30):
        response = await api.post(f"/v1/runs/{run_id}/respond",
                                  json={"action": "approve", "pause_id": pause_id})
        if response.status_code != 503:
            return response
    raise AssertionError("no worker took the answer")
