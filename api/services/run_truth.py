"""The run as it really ended: its memo reconciled with the execution's own status.

A run publishes itself in its memo, but a run terminated, timed out or cancelled from
the Temporal UI or CLI before its first task never gets to publish its end. The describe
(or list row) that carried the memo also carries the execution's status and close time,
so reads check them at no extra cost; only a run that closed without publishing costs
one more call, for the close event that says why.
"""

from __future__ import annotations

from datetime import datetime

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, HistoryEventFilterType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowExecutionStatus

from core.timefmt import truncate_to_millis
from core.types import TERMINAL_STATUSES, Run

_OPEN = (WorkflowExecutionStatus.RUNNING, None)


def needs_reconciling(run: Run, status: WorkflowExecutionStatus | None) -> bool:
    """Whether the execution closed while its memo still shows the run unfinished."""
    return status not in _OPEN and run.status not in TERMINAL_STATUSES


async def reconcile(
    client: Client, run: Run, status: WorkflowExecutionStatus | None,
    close_time: datetime | None, temporal_run_id: str | None,
) -> Run:
    """`run` as the execution ended, when it ended without saying so in the memo."""
    if not needs_reconciling(run, status):
        return run
    event = await _close_event(client, run.id, temporal_run_id)
    return closed_as(run, event, close_time)


def closed_as(run: Run, event: HistoryEvent | None, close_time: datetime | None) -> Run:
    """`run` (unfinished in its memo) as its execution's close `event` ended it."""
    run.pending = None
    run.pauses = []
    run.finished_at = truncate_to_millis(close_time) if close_time else None
    kind = event.event_type if event is not None else None
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        run.status = "cancelled"
        return run
    run.status = "failed"
    if event is not None and kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        reason = event.workflow_execution_terminated_event_attributes.reason.strip()
        run.error = f"Terminated in Temporal: {reason or 'no reason given'}"
    elif event is not None and kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        run.error = "Timed out in Temporal: the run passed its workflow execution timeout"
    elif event is not None and kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        message = event.workflow_execution_failed_event_attributes.failure.message
        run.error = f"Failed in Temporal: {message or 'no message given'}"
    else:
        run.error = "Ended in Temporal without finishing"
    return run


async def _close_event(
    client: Client, run_id: str, temporal_run_id: str | None
) -> HistoryEvent | None:
    response = await client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=client.namespace,
            execution=WorkflowExecution(workflow_id=run_id, run_id=temporal_run_id or ""),
            history_event_filter_type=HistoryEventFilterType.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT,
        )
    )
    events = response.history.events
    return events[-1] if events else None
