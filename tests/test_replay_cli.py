"""`loopllama replay`: deterministic histories pass, a tampered one names the divergence."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from core.settings import Settings
from tests.conftest import crew
from tests.helpers import create_workflow, trigger, wait_for_status

HISTORIES = Path(__file__).parent / "histories"
ROOT = Path(__file__).parent.parent


def loopllama(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env=env,
    )


def test_replay_of_a_recorded_history_is_deterministic() -> None:
    result = loopllama("replay", "--file", str(HISTORIES / "run_question_then_approval.json"))
    assert result.returncode == 0, result.stderr
    events = len(json.loads((HISTORIES / "run_question_then_approval.json").read_text())["events"])
    assert result.stdout.strip() == f"replayed {events} events, deterministic"


def test_replay_names_the_nondeterminism(tmp_path: Path) -> None:
    history = json.loads((HISTORIES / "run_completed.json").read_text())
    for event in history["events"]:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled:
            scheduled["activityType"]["name"] = "a_different_activity"
            break
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(history))
    result = loopllama("replay", "--file", str(tampered))
    assert result.returncode == 1
    assert "Nondeterminism" in result.stdout
    assert "a_different_activity" in result.stdout


async def test_replay_fetches_a_run_from_temporal(
    api: httpx.AsyncClient, worker: Any, settings: Settings, tmp_path: Path
) -> None:
    workflow = await create_workflow(api, crew("a", "b", model="loopllama-offline"))
    run = await trigger(api, workflow["id"], "x")
    await wait_for_status(api, run["id"], "completed")
    env = {"PATH": "/usr/bin:/bin", "TEMPORAL_ADDRESS": settings.temporal_address or ""}
    exported = tmp_path / "run.json"
    result = await asyncio.to_thread(
        loopllama, "replay", run["id"], "--export", str(exported), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("replayed ")
    assert result.stdout.strip().endswith("events, deterministic")
    assert json.loads(exported.read_text())["events"]
