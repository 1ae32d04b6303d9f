"""What a run's Temporal history says that its memo does not: what an execution was
started with, and the model requests its steps made (for a fork's replay records)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.contract import ANTHROPIC_MESSAGES, MODEL_CALL, OFFLINE_MESSAGES
from core.types import ModelRequest, RunInput

_MODEL_ACTIVITIES = frozenset({MODEL_CALL, ANTHROPIC_MESSAGES, OFFLINE_MESSAGES})


async def start_input(client: Client, run_id: str, temporal_run_id: str) -> RunInput:
    """What an execution of a run was started with (its first history event)."""
    handle = client.get_workflow_handle(run_id, run_id=temporal_run_id)
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            (start,) = await client.data_converter.decode(payloads, [RunInput])
            assert isinstance(start, RunInput)
            return start
        break
    raise RuntimeError(f"run {run_id} has no start event in its history")


async def last_model_requests(client: Client, run_id: str, temporal_run_id: str,
                         roles: set[str]) -> dict[str, ModelRequest]:
    """The last model request of each of `roles` in one execution's history (it holds
    the step's whole conversation); roles are read from the calls' summaries."""
    handle = client.get_workflow_handle(run_id, run_id=temporal_run_id)
    last: dict[str, ModelRequest] = {}
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attributes = event.activity_task_scheduled_event_attributes
        if attributes.activity_type.name not in _MODEL_ACTIVITIES:
            continue
        (summary,) = await client.data_converter.decode([event.user_metadata.summary], [str])
        role = str(summary).split(" · ", 1)[0]
        if role not in roles:
            continue
        (request,) = await client.data_converter.decode(attributes.input.payloads,
                                                        [ModelRequest])
        assert isinstance(request, ModelRequest)
        last[role] = request
    return last
