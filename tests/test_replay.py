"""Recorded histories replay against the current workflow code.

A failure here means a change would break runs already in flight: guard the change with
`workflow.patched` instead of re-recording.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.types import Run, RunInput
from workflows.registry import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_there_are_histories_to_replay() -> None:
    names = {p.stem for p in HISTORIES}
    assert {
        "run_completed", "run_failed", "run_question_then_approval",
        "run_question_then_rejection",
    } <= names


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
