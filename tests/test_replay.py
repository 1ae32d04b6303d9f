"""Recorded histories replay against the current workflow code.

A failure here means a change would break runs already in flight: guard the change with
`workflow.patched` instead of re-recording.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.types import Run, RunInput
from workflows.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


SCENARIOS = {
    "run_completed", "run_failed", "run_question_then_approval", "run_question_then_rejection",
}


def test_there_are_histories_to_replay() -> None:
    names = {p.stem for p in HISTORIES}
    # Current code, and runs started before the `publish-once-per-task` patch (v1_*),
    # which still replay down the old branch.
    assert SCENARIOS <= names
    assert {f"v1_{name}" for name in SCENARIOS} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_deterministically(path: Path) -> None:
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="CrewRun")
class ReorderedCrewRun:
    """A deliberately incompatible change: a timer before the first model call."""

    @workflow.run
    async def run(self, start: RunInput) -> Run:
        await workflow.sleep(timedelta(seconds=1))
        raise AssertionError("unreachable in replay")


async def test_an_incompatible_change_is_caught() -> None:
    replayer = Replayer(workflows=[ReorderedCrewRun], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load(Path(__file__).parent / "histories" /
                                            "run_completed.json"))


def count_memo_events(path: Path) -> int:
    return sum(
        1 for event in load(path).events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED
    )


def test_new_runs_publish_once_per_workflow_task() -> None:
    folder = Path(__file__).parent / "histories"
    # Three agents, no tools: start + two step boundaries + finish.
    assert count_memo_events(folder / "run_offline_three_agents.json") == 4
    assert count_memo_events(folder / "v1_run_offline_three_agents.json") == 11
