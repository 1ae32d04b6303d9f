"""Delivering one event to one webhook, durably: a child workflow of the run.

The run starts it and does not wait (the child outlives the run if it must), so a slow,
failing or dead receiver never delays, fails or blocks the run. The delivery activity is
retried with backoff for up to 24 hours on answers and failures that can pass.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WEBHOOK_REJECTED, WebhookSender
    from core.types import WebhookDelivery

WEBHOOK_WORKFLOW_TYPE = "WebhookDelivery"
# Standard Webhooks' guidance: keep trying for about a day, further and further apart.
DELIVERY_DEADLINE = timedelta(hours=24)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=15),
    maximum_attempts=0,
    non_retryable_error_types=[WEBHOOK_REJECTED],
)
ATTEMPT_TIMEOUT = timedelta(seconds=30)
# The activity heartbeats every 2 s: a worker that died mid-attempt is noticed in 10.
ATTEMPT_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name=WEBHOOK_WORKFLOW_TYPE)
class WebhookDeliveryWorkflow:
    """POST one event to one endpoint until it is accepted, refused, or a day passed."""

    @workflow.run
    async def run(self, delivery: WebhookDelivery) -> None:
        """Deliver; fails (visibly, in the Temporal UI) when the receiver never took it."""
        await workflow.execute_activity_method(
            WebhookSender.deliver,
            delivery,
            schedule_to_close_timeout=DELIVERY_DEADLINE,
            start_to_close_timeout=ATTEMPT_TIMEOUT,
            heartbeat_timeout=ATTEMPT_HEARTBEAT,
            retry_policy=DELIVERY_RETRY,
            summary=f"{delivery.type} → {delivery.url}"[:200],
        )
