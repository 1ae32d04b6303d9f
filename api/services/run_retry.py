"""Retrying a run from its failed step with Temporal's own reset.

A reset keeps a closed execution's history up to a chosen workflow task and runs the
workflow on from there as a new execution of the same workflow id: every activity that
completed before that point stays completed (its result is replayed, never called
again), and everything after it is dropped. The point is the workflow task that started
the failed step: it is the one that first published the step's memo entry, so its
`WorkflowPropertiesModified` event names the `WorkflowTaskCompleted` to reset to. An
operator does the same in the Temporal UI (Reset, choosing that event) or with
`temporal workflow reset --event-id`.
"""

from __future__ import annotations

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyExcludeType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client

from core.run_memo import step_key
from core.types import Run

# Answers and cancel requests sent to the failed execution belong to it; the retried
# step asks its questions again.
_NOT_REAPPLIED = [
    ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL,
    ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE,
    ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_CANCEL_REQUEST,
]


async def reset_point(client: Client, run: Run, temporal_run_id: str) -> int | None:
    """The `WorkflowTaskCompleted` event id that began the run's last step.

    None when the run never began a step (it never ran a workflow task).
    """
    key = step_key(run.steps[-1].order) if run.steps else None
    handle = client.get_workflow_handle(run.id, run_id=temporal_run_id)
    async for event in handle.fetch_history_events():
        if key is None and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return int(event.event_id)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            modified = event.workflow_properties_modified_event_attributes
            if key in modified.upserted_memo.fields:
                return int(modified.workflow_task_completed_event_id)
    return None


async def reset_to(client: Client, run: Run, temporal_run_id: str, event_id: int) -> None:
    """Reset the run's execution to `event_id`, once per failed execution."""
    step = f"step {run.steps[-1].order + 1} ({run.steps[-1].role})" if run.steps else "the start"
    await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=run.id, run_id=temporal_run_id),
            reason=f"LoopLlama retry from {step}",
            workflow_task_finish_event_id=event_id,
            # Two retries of the same failed execution make one reset.
            request_id=f"loopllama-retry-{temporal_run_id}",
            reset_reapply_exclude_types=_NOT_REAPPLIED,
        )
    )
