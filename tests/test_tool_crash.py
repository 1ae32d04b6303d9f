"""A worker dies right after an approval: the approved email still goes out, once.

The guarantee, precisely: an approved tool call runs once, except when a worker dies
after the receiver accepted the call and before Temporal recorded it; then the retry
repeats it with the same idempotency key (for email: the same Message-ID), so the
receiver can tell the copy apart.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace
from pathlib import Path

import httpx

from core.settings import Secret, Settings
from tests.conftest import crew, eventually, for_role, start_worker_process, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.smtp_server import FakeSmtp
from tests.helpers import create_workflow, trigger, wait_for_status

EMAIL = {"to": "bob@example.com", "subject": "Launch", "body": "We launch Monday."}


async def approve_then_kill_worker(
    api: httpx.AsyncClient, settings: Settings, fake: FakeAnthropic, smtp: FakeSmtp,
    tmp_path: Path, stage: str,
) -> tuple[dict[str, object], FakeSmtp]:
    tag = unique_tag()
    fake.reply_tool_use("send_email", EMAIL, tool_use_id="toolu_mail", when=for_role(tag, "mailer"))
    fake.reply_text("sent it", when=for_role(tag, "mailer"))
    workflow = await create_workflow(
        api, crew("mailer", tag=tag, tools=["send_email"]),
        human_in_the_loop={"approval_required_tools": ["send_email"]},
    )
    own = replace(settings, smtp_url=Secret(smtp.url), smtp_from="crew@example.com")
    workers: list[subprocess.Popen[bytes]] = [
        start_worker_process(own, tmp_path / "worker-1.log")
    ]
    try:
        run = await trigger(api, workflow["id"], "Tell Bob.")
        await wait_for_status(api, str(run["id"]), "waiting_input")
        smtp.hold(stage)
        response = await api.post(f"/v1/runs/{run['id']}/respond", json={"action": "approve"})
        assert response.status_code == 202, response.text
        assert await asyncio.to_thread(smtp.reached.wait, 30)
        workers[0].kill()
        workers[0].wait(timeout=10)
        smtp.release.set()
        workers.append(start_worker_process(own, tmp_path / "worker-2.log"))
        done = await wait_for_status(api, str(run["id"]), "completed", "failed", within=60)
    finally:
        smtp.release.set()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=10)
    return done, smtp


async def test_worker_killed_before_the_mail_server_got_the_email(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    tmp_path: Path,
) -> None:
    done, _ = await approve_then_kill_worker(
        api, settings, fake_anthropic, smtp, tmp_path, stage="rcpt"
    )
    assert done["status"] == "completed", done["error"]
    (mail,) = smtp.messages()
    assert mail.recipients == ["bob@example.com"]
    assert mail.message["Subject"] == "Launch"


async def test_worker_killed_after_the_mail_server_accepted_the_email(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
    tmp_path: Path,
) -> None:
    done, _ = await approve_then_kill_worker(
        api, settings, fake_anthropic, smtp, tmp_path, stage="data"
    )
    assert done["status"] == "completed", done["error"]

    async def both_copies() -> bool:
        return len(smtp.messages()) == 2

    await eventually(both_copies, within=10)
    first, second = smtp.messages()
    # At-least-once here, and recognisably so: the retry is the same message.
    assert first.message_id == second.message_id
    assert (
        first.message["X-LoopLlama-Idempotency-Key"]
        == second.message["X-LoopLlama-Idempotency-Key"]
    )
    assert first.body == second.body
