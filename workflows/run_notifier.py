"""A run's webhook fan-out: one delivery workflow per event and subscribed webhook."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow
from temporalio.workflow import ChildWorkflowCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from core.types import Run, RunEventType, RunInput, Step, WebhookDelivery
    from workflows.webhook_delivery import WebhookDeliveryWorkflow


class RunNotifier:
    """Starts webhook deliveries for one run, without waiting for them."""

    def __init__(self, start: RunInput, run: Run) -> None:
        self._start = start
        self._run = run
        self._starts: list[asyncio.Task[None]] = []

    def notify(self, kind: RunEventType, at: datetime, step: Step | None = None) -> None:
        """Start delivering `kind` to every webhook that wants it, without waiting.

        Each delivery is a child workflow that outlives the run if it must, so a slow or
        dead receiver never holds the run up. Runs without webhooks issue no command.
        """
        hooks = [hook for hook in self._start.webhooks if kind in hook.events]
        if not hooks:
            return
        data = self._run.model_dump(mode="json", exclude={"steps"})
        if step is not None:
            # The step without its input (every earlier output: large, and in the run).
            data["step"] = step.model_dump(mode="json", exclude={"input"})
        for hook in hooks:
            delivery = WebhookDelivery(
                message_id=f"msg_{workflow.uuid4().hex}", url=hook.url,
                workflow_id=self._start.workflow_id,
                secret_version=self._start.webhook_secret_version, type=kind,
                timestamp=at, data=data,
            )
            self._starts.append(asyncio.create_task(self._start_delivery(delivery)))

    async def _start_delivery(self, delivery: WebhookDelivery) -> None:
        await workflow.start_child_workflow(
            WebhookDeliveryWorkflow.run,
            delivery,
            id=f"{self._run.id}-{delivery.message_id}",
            parent_close_policy=ParentClosePolicy.ABANDON,
            cancellation_type=ChildWorkflowCancellationType.ABANDON,
            static_summary=f"{delivery.type} for run {self._run.id}",
        )

    async def started(self) -> None:
        """Wait until Temporal has every delivery this run started (they go on alone)."""
        if self._starts:
            await asyncio.gather(*self._starts)
