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
# Crew graphs: a fan-out and its join, two pauses open at once, a failed branch with its
# sibling cancelled, and a retried fan-out (the retry's new execution).
GRAPHS = {"graph_fan_out", "graph_two_pauses", "graph_failed_branch", "graph_retried"}
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
    assert GRAPHS <= names
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


def _history_text(name: str) -> str:
    return (FOLDER / f"{name}.json").read_text()


def test_the_graph_histories_hold_what_they_are_named_for() -> None:
    # Three branches scheduled in one workflow task (max_parallel 2 holds the third).
    fan_out = load(FOLDER / "graph_fan_out.json").events
    scheduled = [e for e in fan_out if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == 5
    assert scheduled[1].activity_task_scheduled_event_attributes.workflow_task_completed_event_id \
        == scheduled[2].activity_task_scheduled_event_attributes.workflow_task_completed_event_id
    # Two updates answer two pauses that were open at once.
    pauses = load(FOLDER / "graph_two_pauses.json").events
    accepted = [e for e in pauses
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
    assert len(accepted) == 2
    # The failed branch's sibling was waiting for a person: its timer-less wait is
    # cancelled without a command, and the run failed.
    assert load(FOLDER / "graph_failed_branch.json").events[-1].event_type == \
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    # The retry is a new execution whose input carries the completed steps forward.
    retried = load(FOLDER / "graph_retried.json").events
    assert retried[0].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    assert "retry_of" in retried[0].workflow_execution_started_event_attributes.memo.fields
    assert retried[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED


def test_the_any_model_history_holds_one_model_call_for_every_provider() -> None:
    events = load(FOLDER / "run_any_model.json").events
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    # Claude, OpenAI, then the offline model's two rounds around the MCP tool.
    assert scheduled == ["model_call", "model_call", "model_call", "mcp_tool", "model_call"]
    markers = [e for e in events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert any(b"one-model-call" in p.data for e in markers
               for p in e.marker_recorded_event_attributes.details["patch-data"].payloads)
    # Runs recorded before it name one activity per provider, and still replay.
    older = load(FOLDER / "run_completed.json").events
    assert "anthropic_messages" in [
        e.activity_task_scheduled_event_attributes.activity_type.name for e in older
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
