"""Activity failures raised on purpose are expected, not bugs: one log line each.

An activity raises `ApplicationError` when the world said no (a model key missing, a
request the model API refused, a receiver that is down); Temporal retries it or the
run reports it. The SDK would log each one at WARNING with a full traceback. This
interceptor logs one line instead and marks the failure benign; any other exception
keeps the SDK's traceback, because that one is a bug.

The message goes on to become a run's `error`, its events and its webhooks (or a tool
result the model reads), so it leaves redacted (core/redaction.py) of `secrets` and of
anything shaped like a credential, whichever activity raised it, and whatever it raised:
an unexpected exception whose message carries one is sent on as an `ApplicationError`
of the same type name, redacted, its traceback logged.
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

from core.redaction import redact


class ExpectedFailures(Interceptor):
    """Worker interceptor: one warning line per deliberate activity failure, its message
    redacted of `secrets` (the worker's configured secrets) and credential shapes."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._secrets = secrets

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity."""
        return _OneLine(next, self._secrets)


class _OneLine(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, secrets: tuple[str, ...]) -> None:
        super().__init__(next)
        self._secrets = secrets

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except ApplicationError as err:
            if err.category == ApplicationErrorCategory.BENIGN:
                raise
            message = redact(err.message, self._secrets)
            info = activity.info()
            activity.logger.warning(
                "%s failed (attempt %d): %s [%s]", info.activity_type, info.attempt,
                message.replace("\n", " "), err.type or "ApplicationError",
            )
            raise ApplicationError(
                message, *err.details, type=err.type, non_retryable=err.non_retryable,
                next_retry_delay=err.next_retry_delay,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        except Exception as err:
            # A bug keeps its traceback (in the log, whose lines are redacted), but its
            # message goes on to the run like any other: it leaves without a secret.
            message = str(err)
            clean = redact(message, self._secrets)
            if clean == message:
                raise
            info = activity.info()
            activity.logger.warning("%s failed (attempt %d)", info.activity_type,
                                    info.attempt, exc_info=True)
            raise ApplicationError(clean, type=type(err).__name__) from None
