"""Retrying a failed run: a new execution of the same run that carries forward what the
failed one finished.

A Temporal reset would replay the failed execution up to a point and run on from there,
but it schedules again every activity that completed after that point: in a crew graph
that is every model call that sibling branches completed after the failed step began.
So a retry starts a new execution under the same workflow id (the run id, so the API and
the Temporal UI see one run) whose input carries the completed steps and the unfinished
steps' tool loops (`CarriedRun`): completed steps never run again, and an unfinished one
goes on from its last completed model call and tool result.

Runs that were retried with a reset before crew graphs keep their history and replay as
they are (api/services/run_events.py still follows resets).
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from api.services.run_history import start_input
from api.services.temporal_calls import start_once
from core.contract import RUN_WORKFLOW_TYPE
from core.crew_graph import is_chain, parents_of
from core.run_memo import RETRY_OF_KEY, progress_from_memo, run_memo
from core.temporal import SA_STATUS
from core.types import CarriedRun, Run


async def start_retry(client: Client, run: Run, description: WorkflowExecutionDescription
                      ) -> None:
    """Start the failed run's next execution (once: a concurrent retry joins it)."""
    start = await start_input(client, run.id, description.run_id)
    memo = await description.memo()
    carried = CarriedRun(
        retry_of=description.run_id,
        started_at=run.started_at,
        steps=run.steps,
        progress=progress_from_memo(memo),
    )
    going_on = Run(id=run.id, workflow_id=run.workflow_id, input=run.input,
                   created_at=run.created_at, status="running")
    carried.apply_to(going_on)
    parents = parents_of(start.crew)
    entries = run_memo(going_on, going_on.steps, None if is_chain(parents) else parents)
    entries[RETRY_OF_KEY] = description.run_id
    attributes = [pair for pair in description.typed_search_attributes
                  if pair.key.name != SA_STATUS.name]
    await start_once(client.start_workflow(
        RUN_WORKFLOW_TYPE,
        start.model_copy(update={"carried": carried}),
        id=run.id,
        task_queue=description.task_queue or "",
        memo=entries,
        search_attributes=TypedSearchAttributes(
            [*attributes, SearchAttributePair(SA_STATUS, "running")]),
        static_summary=await description.static_summary(),
        # The failed execution makes way; a retry sent twice joins the first one's.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    ))
