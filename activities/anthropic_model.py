"""The Claude model call: one Messages API request per activity attempt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from core.types import ModelRequest, ModelResponse

# Error types the workflow (and the Temporal UI) see.
RETRYABLE = "ModelUnavailable"
REJECTED = "ModelRequestRejected"
NOT_CONFIGURED = "ModelNotConfigured"

_MAX_RETRY_AFTER = timedelta(minutes=5)


class AnthropicModel:
    """Calls Claude through one async client per worker.

    The client's own retries are off: Temporal retries the activity with backoff, so every
    attempt is visible in the run's history and the UI.
    """

    def __init__(self, client: anthropic.AsyncAnthropic | None) -> None:
        self._client = client

    @activity.defn(name="anthropic_messages")
    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send one Messages request; classify failures as retryable or not."""
        if self._client is None:
            raise ApplicationError(
                f"Model {request.model!r} needs ANTHROPIC_API_KEY on the worker; set it, "
                "or use the offline model 'loopllama-offline'.",
                type=NOT_CONFIGURED,
                non_retryable=True,
            )
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = request.tools
        try:
            async with heartbeating():
                message = await self._client.messages.create(**kwargs)
        except anthropic.APIConnectionError as err:  # includes timeouts
            raise ApplicationError(
                f"Could not reach the model API ({type(err).__name__})",
                type=RETRYABLE,
            ) from None
        except anthropic.APIStatusError as err:
            raise classify_status_error(err) from None
        return ModelResponse(
            content=[block.model_dump(mode="json", exclude_none=True) for block in message.content],
            stop_reason=message.stop_reason,
            tokens_in=message.usage.input_tokens,
            tokens_out=message.usage.output_tokens,
        )


def classify_status_error(err: anthropic.APIStatusError) -> ApplicationError:
    """Rate limits, overload and 5xx pass with time; other statuses need a change."""
    detail = _error_message(err)
    if isinstance(err, anthropic.RateLimitError | anthropic.InternalServerError) or (
        err.status_code == 408
    ):
        return ApplicationError(
            f"The model API answered {err.status_code} ({detail})",
            type=RETRYABLE,
            next_retry_delay=_retry_after(err),
        )
    advice = {
        400: "check the agent's model name, max_tokens and instructions",
        401: "check ANTHROPIC_API_KEY on the worker",
        403: "the API key may not use this model",
        404: "check the model name",
    }.get(err.status_code, "check the agent's configuration")
    return ApplicationError(
        f"The model API rejected the request ({err.status_code}: {detail}); {advice}.",
        type=REJECTED,
        non_retryable=True,
    )


def _error_message(err: anthropic.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or err.message)[:500]


def _retry_after(err: anthropic.APIStatusError) -> timedelta | None:
    value = err.response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), _MAX_RETRY_AFTER)
