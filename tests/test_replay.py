"""Recorded histories replay against the current workflow code.

A failure here means a change would break runs already in flight: guard the change with
`workflow.patched` instead of re-recording.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from core.converter import data_converter
from core.types import Run, RunInput
from workflows.registry import WORKFLOWS, workflow_runner

FOLDER = Path(__file__).parent / "histories"
HISTORIES = sorted(FOLDER.glob("*.json"))


@pytest.fixture(scope="module")
def converter(tmp_path_factory: pytest.TempPathFactory) -> DataConverter:
    """Reads the recorded runs' large payloads, which their histories reference.

    From a copy: replaying encodes the commands the current code issues, and a memo
    that changed shape would otherwise leave new blob files in the repository.
    """
    blobs = tmp_path_factory.mktemp("replay") / "blobs"
    shutil.copytree(FOLDER / "blobs", blobs)
    return data_converter(blobs)


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


SCENARIOS = {
    "run_completed", "run_failed", "run_question_then_approval", "run_question_then_rejection",
}
# Recorded since cancel, retry, pause ids and the blob store.
LIFECYCLE = {"run_cancelled", "run_retried", "run_pause_ids", "run_big_outputs",
             "run_with_webhooks"}
# A crew definition created, patched, paused, resumed and deleted; one that ignored a
# cancel request (Temporal UI or CLI) first.
DEFINITIONS = {"definition_lifecycle", "definition_cancel_ignored"}


def test_there_are_histories_to_replay() -> None:
    names = {p.stem for p in HISTORIES}
    # Current code, and runs started before the `publish-once-per-task` patch (v1_*),
    # which still replay down the old branch.
    assert SCENARIOS <= names
    assert {f"v1_{name}" for name in SCENARIOS} <= names
    assert LIFECYCLE <= names
    assert DEFINITIONS <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_deterministically(path: Path, converter: DataConverter) -> None:
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=converter,
                        workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name="CrewRun")
class ReorderedCrewRun:
    """A deliberately incompatible change: a timer before the first model call."""

    @workflow.run
    async def run(self, start: RunInput) -> Run:
        await workflow.sleep(timedelta(seconds=1))
        raise AssertionError("unreachable in replay")


async def test_an_incompatible_change_is_caught(converter: DataConverter) -> None:
    replayer = Replayer(workflows=[ReorderedCrewRun], data_converter=converter,
                        workflow_runner=workflow_runner())
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


def test_large_payloads_are_references_in_the_history() -> None:
    history = (FOLDER / "run_big_outputs.json").read_text()
    # Three 25 KB outputs: each is in the blob store, and the history names it.
    assert history.count("externalPayloads") >= 6
    assert len(history) < 40_000
    assert len(list((FOLDER / "blobs").rglob("*"))) > 3


def test_a_retried_run_replays_through_its_reset() -> None:
    events = load(FOLDER / "run_retried.json").events
    failed_tasks = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert [e.workflow_task_failed_event_attributes.cause for e in failed_tasks] == [
        WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
    ]
