"""Delivering a run's event to a webhook: one signed POST per attempt.

Signing follows Standard Webhooks: `webhook-id` is the same on every attempt of one
event, `webhook-timestamp` is the attempt's time (receivers refuse old ones), and
`webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the
workflow's current secret. The connection goes only to the address that passed the
network rules (core/net_policy.py), like the HTTP tools'.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from loopllama.webhooks import sign_webhook
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import heartbeating
from core.net_policy import (
    DestinationRefused,
    Resolver,
    check_destination,
    pinned,
    system_resolver,
)
from core.settings import Secret
from core.timefmt import format_timestamp
from core.types import WebhookDelivery
from core.webhook_secrets import GENERATION_MEMO_KEY, webhook_secret

# The receiver refused the event for good (a 4xx other than 408/429); not retried.
WEBHOOK_REJECTED = "WebhookRejected"
# Anything that can pass: 5xx, 408, 429, timeouts, connection errors, a missing key.
WEBHOOK_UNAVAILABLE = "WebhookUnavailable"
ATTEMPT_SECONDS = 10.0
_PASSING = frozenset({408, 429})


class WebhookSender:
    """Signs and POSTs deliveries with one pinned HTTP client per worker."""

    def __init__(self, http: httpx.AsyncClient, allowlist: tuple[str, ...],
                 key: Secret | None, *, resolver: Resolver = system_resolver) -> None:
        self._http = http
        self._allowlist = allowlist
        self._key = key
        self._resolver = resolver

    @activity.defn(name="deliver_webhook")
    async def deliver(self, delivery: WebhookDelivery) -> None:
        """One attempt; returns when the receiver answered 2xx."""
        if self._key is None:
            raise ApplicationError(
                "LOOPLLAMA_WEBHOOK_KEY is not set on this worker, so it cannot sign "
                "webhooks; set it (the same value as the API's) and the delivery goes on.",
                type=WEBHOOK_UNAVAILABLE,
            )
        try:
            destination = await check_destination(
                delivery.url, self._allowlist, require_allowlisted=False, require_https=True,
                resolver=self._resolver,
            )
        except DestinationRefused as refused:
            raise ApplicationError(f"Webhook refused: {refused}.", type=WEBHOOK_REJECTED,
                                   non_retryable=True) from None
        secret = webhook_secret(self._key, delivery.workflow_id, await self._generation(delivery))
        body = json.dumps(
            {"type": delivery.type, "timestamp": format_timestamp(delivery.timestamp),
             "data": delivery.data},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(secret, delivery.message_id, timestamp, body),
        }
        try:
            async with heartbeating(), asyncio.timeout(ATTEMPT_SECONDS):
                with pinned(destination):
                    response = await self._http.post(delivery.url, content=body,
                                                     headers=headers)
        except (TimeoutError, httpx.HTTPError) as err:
            raise ApplicationError(f"{delivery.url} did not answer ({type(err).__name__})",
                                   type=WEBHOOK_UNAVAILABLE) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in _PASSING or status >= 500:
            raise ApplicationError(f"{delivery.url} answered {status}",
                                   type=WEBHOOK_UNAVAILABLE)
        raise ApplicationError(f"{delivery.url} refused the event with {status}",
                               type=WEBHOOK_REJECTED, non_retryable=True)

    async def _generation(self, delivery: WebhookDelivery) -> int:
        """The definition's current secret generation (a rotation applies at once), or
        the run's own when the definition is gone."""
        try:
            description = await activity.client().get_workflow_handle(
                delivery.workflow_id).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return delivery.secret_version
        if description.status != WorkflowExecutionStatus.RUNNING:
            return delivery.secret_version
        generation = (await description.memo()).get(GENERATION_MEMO_KEY)
        return generation if isinstance(generation, int) else delivery.secret_version
