"""What every provider's answer must pass, and the failures a provider raises.

The failure types are the workflow's (core/contract.py): `unavailable` passes with time
and is retried by Temporal; `rejected` and `unusable_reply` need a change and are not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from core.contract import MODEL_REJECTED, MODEL_REPLY_UNUSABLE, MODEL_UNAVAILABLE
from core.types import ModelResponse

# How deeply a reply's content may nest (lists and objects). Temporal's payload converter
# serializes about 250 levels and parses back 200 of a whole payload, and a reply travels
# on inside deeper payloads (the next request's messages, a retried run's input, the
# memo): 100 leaves room for those, and no tool input a schema describes comes near it.
MAX_REPLY_DEPTH = 100

_MAX_RETRY_AFTER = timedelta(minutes=5)

# Statuses that pass with time: timeout, conflict (a concurrent request), rate limit,
# and every 5xx (529 is Anthropic's "overloaded"). Judged by the status itself, not the
# SDKs' exception classes, which vary between SDK versions and gateways.
_PASSING_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether a model API answer with `status` may succeed if the call is repeated."""
    return status in _PASSING_STATUSES or 500 <= status <= 599


def status_failure(provider: str, status: int, detail: str, *, key_setting: str,
                   retry_after: str | None = None) -> ApplicationError:
    """The failure for an HTTP error answer: retried for statuses that pass with time,
    else not, with advice by status. `detail` is the API's own message, already redacted;
    `key_setting` names where the provider's key is configured, for a 401."""
    if is_retryable_status(status):
        return unavailable(f"The {provider} API answered {status} ({detail})",
                           retry_after=retry_after_delay(retry_after))
    advice = {
        400: "check the agent's model name, max_tokens and instructions",
        401: f"check {key_setting} on the worker",
        403: "the API key may not use this model",
        404: "check the model name",
    }.get(status, "check the agent's configuration")
    return rejected(f"The {provider} API rejected the request ({status}: {detail}); {advice}.")


def unavailable(message: str, *, retry_after: timedelta | None = None) -> ApplicationError:
    """A failure that may pass with time: Temporal retries the call with backoff."""
    return ApplicationError(message, type=MODEL_UNAVAILABLE, next_retry_delay=retry_after)


def rejected(message: str) -> ApplicationError:
    """A failure that needs a change (a key, a model name): the step fails at once."""
    return ApplicationError(message, type=MODEL_REJECTED, non_retryable=True)


def unusable_reply(why: str) -> ApplicationError:
    """The non-retryable failure for a reply the run cannot take, saying `why`."""
    return ApplicationError(
        f"The model's reply cannot be used: {why}. Not retried: the same reply would fail "
        "the same way.",
        type=MODEL_REPLY_UNUSABLE,
        non_retryable=True,
    )


def retry_after_delay(value: str | None) -> timedelta | None:
    """A `retry-after` header's seconds as a delay (at most five minutes), or None."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), _MAX_RETRY_AFTER)


def check_tool_inputs(content: list[dict[str, Any]]) -> None:
    """Raise `unusable_reply` for a tool input nested past what a run can store."""
    for block in content:
        depth = nesting(block.get("input"), MAX_REPLY_DEPTH)
        if depth > MAX_REPLY_DEPTH:
            name = repr(block.get("name", "?"))[:80]
            raise unusable_reply(
                f"its input for the tool {name} is nested more than {MAX_REPLY_DEPTH} "
                "levels deep, more than a run can store; give the tool a flatter "
                "input_schema, or ask for flatter input in the agent's instructions")


def checked(response: ModelResponse) -> ModelResponse:
    """`response`, once it is known to travel through Temporal (else `unusable_reply`).

    A reply that cannot be stored as the activity's result would fail the same way on
    every attempt, each one billed: it fails at once, non-retryable, saying why.
    """
    # The content list and a block hold a tool's input: two levels more.
    if nesting(response.content, MAX_REPLY_DEPTH + 2) > MAX_REPLY_DEPTH + 2:
        raise unusable_reply(
            f"its content is nested more than {MAX_REPLY_DEPTH} levels deep, more than a "
            "run can store")
    check_storable(response)
    return response


def check_storable(response: ModelResponse) -> None:
    """Raise `unusable_reply` unless the worker's payload converter (LoopLlama's, outside
    a worker) both writes `response` and reads it back, as the workflow will."""
    converter = (activity.payload_converter() if activity.in_activity()
                 else pydantic_data_converter.payload_converter)
    try:
        payloads = converter.to_payloads([response])
        converter.from_payloads(payloads, [ModelResponse])
    except Exception as err:  # noqa: BLE001 - any failure here fails every attempt alike
        raise unusable_reply(
            f"Temporal's payload converter cannot carry it ({type(err).__name__})"
        ) from None


def nesting(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0, `{}` is 1), counted
    without recursion; stops looking once past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest
