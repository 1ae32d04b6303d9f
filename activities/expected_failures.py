"""Activity failures raised on purpose are expected, not bugs: one log line each.

An activity raises `ApplicationError` when the world said no (a model key missing, a
request the model API refused, a receiver that is down); Temporal retries it or the
run reports it. The SDK would log each one at WARNING with a full traceback. This
interceptor logs one line instead and marks the failure benign; any other exception
keeps the SDK's traceback, because that one is a bug.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class ExpectedFailures(Interceptor):
    """Worker interceptor: one warning line per deliberate activity failure."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity."""
        return _OneLine(next)


class _OneLine(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApplicationError as err:
            if err.category == ApplicationErrorCategory.BENIGN:
                raise
            info = activity.info()
            activity.logger.warning(
                "%s failed (attempt %d): %s [%s]", info.activity_type, info.attempt,
                err.message.replace("\n", " "), err.type or "ApplicationError",
            )
            raise ApplicationError(
                err.message, *err.details, type=err.type, non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
