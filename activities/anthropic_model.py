"""The Claude model call: one Messages API request per activity attempt.

Every call asks for prompt caching (unless the worker's settings turn it off). Anthropic
caches a prompt *prefix*, in the order tools → system → messages, up to a block marked
with `cache_control`; a later request whose prefix is byte-for-byte the same reads it at
a tenth of the input price, after one write at 1.25×. A call carries at most two or three
of the four breakpoints a request may have (`cache_breakpoints`):

1. after the tools and the system prompt (on the system prompt, or on the last tool when
   there is none), which are the same for every call an agent makes, in every run of its
   workflow: long instructions are written once, then read at a tenth of the price for
   as long as calls keep coming within five minutes;
2. when the agent has tools, on the last block of the latest message, so the next round
   of its tool loop (this conversation plus one answer and its tool results) reads all
   of it from the cache;
3. with tools, on the last block of the message that ended the previous round's request,
   where that round wrote its cache entry. The API only looks about 20 blocks back from
   a breakpoint for an earlier entry, and a round with many parallel tool calls adds
   more than that; this breakpoint finds the entry wherever it is, and writes nothing.

A prefix shorter than the model's minimum (1,024 to 4,096 tokens, depending on the
model) is simply not cached: the request is billed as if it had no breakpoints, so
marking short prompts costs nothing. The markers are added here, in the activity, so
workflow histories hold the provider-neutral request and replay is unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from core.contract import (
    ANTHROPIC_MESSAGES,
    MODEL_NOT_CONFIGURED,
    MODEL_REJECTED,
    MODEL_REPLY_UNUSABLE,
    MODEL_UNAVAILABLE,
)
from core.redaction import redact
from core.tracing import annotate_model_call, annotate_model_usage
from core.types import ModelRequest, ModelResponse
from core.worker_metrics import record_model_call

# Error types the workflow (and the Temporal UI) see.
RETRYABLE = MODEL_UNAVAILABLE
REJECTED = MODEL_REJECTED
NOT_CONFIGURED = MODEL_NOT_CONFIGURED
REPLY_UNUSABLE = MODEL_REPLY_UNUSABLE

# How deeply a reply's content may nest (lists and objects). Temporal's payload converter
# serializes about 250 levels and parses back 200 of a whole payload, and a reply travels
# on inside deeper payloads (the next request's messages, a retried run's input, the
# memo): 100 leaves room for those, and no tool input a schema describes comes near it.
MAX_REPLY_DEPTH = 100

_MAX_RETRY_AFTER = timedelta(minutes=5)

# The default five-minute cache; a read refreshes it, and the rounds of a tool loop and
# the runs of a busy workflow come well within that. The one-hour cache costs 2× to write.
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
# The Messages API refuses a request with more breakpoints than this.
MAX_BREAKPOINTS = 4
# Blocks that may carry cache_control (not thinking blocks, not empty text).
_MARKABLE = ("text", "tool_result", "tool_use", "image", "document")


class AnthropicModel:
    """Calls Claude through one async client per worker.

    The client's own retries are off: Temporal retries the activity with backoff, so every
    attempt is visible in the run's history and the UI. `secrets` (the worker's configured
    secrets, core/redaction.py) are redacted from the API's error messages, which become
    the run's `error`, its events and its webhooks.
    """

    def __init__(
        self, client: anthropic.AsyncAnthropic | None, *, prompt_cache: bool = True,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._prompt_cache = prompt_cache
        self._secrets = secrets

    @activity.defn(name=ANTHROPIC_MESSAGES)
    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send one Messages request; classify failures as retryable or not."""
        annotate_model_call("anthropic", request.model)
        if self._client is None:
            record_model_call(request.model, None, error_class=NOT_CONFIGURED)
            raise ApplicationError(
                f"Model {request.model!r} needs ANTHROPIC_API_KEY on the worker; set it, "
                "or use the offline model 'loopllama-offline'.",
                type=NOT_CONFIGURED,
                non_retryable=True,
            )
        kwargs = messages_kwargs(request, prompt_cache=self._prompt_cache)
        started = time.monotonic()
        try:
            async with heartbeating():
                message = await self._client.messages.create(**kwargs)
        except anthropic.APIConnectionError as err:  # includes timeouts
            record_model_call(request.model, started, error_class=type(err).__name__)
            raise ApplicationError(
                f"Could not reach the model API ({type(err).__name__})",
                type=RETRYABLE,
            ) from None
        except anthropic.APIStatusError as err:
            record_model_call(request.model, started, error_class=type(err).__name__)
            raise classify_status_error(err, self._secrets) from None
        except (anthropic.APIResponseValidationError, RecursionError) as err:
            # An answer the SDK cannot read (a reply nested past what its JSON parser
            # takes, or not a Messages reply): the same answer fails the same way.
            record_model_call(request.model, started, error_class=REPLY_UNUSABLE)
            raise unusable_reply(f"the SDK cannot read it ({type(err).__name__})") from None
        try:
            response = model_response(message)
        except ApplicationError:
            record_model_call(request.model, started, error_class=REPLY_UNUSABLE)
            raise
        annotate_model_usage(response)
        record_model_call(request.model, started, tokens={
            "input": response.tokens_in, "output": response.tokens_out,
            "cache_read": response.tokens_in_cached,
            "cache_write": response.tokens_in_cache_write})
        return response


def model_response(message: anthropic.types.Message) -> ModelResponse:
    """The run's view of a Messages reply, checked to travel through Temporal.

    A reply that cannot be stored as the activity's result (a tool input nested past what
    the payload converter serializes or parses, a reply that is not a Messages reply)
    would fail the same way on every attempt, each one billed: it fails at once,
    non-retryable (`MODEL_REPLY_UNUSABLE`), saying why.
    """
    for block in message.content:
        tool_input = getattr(block, "input", None)
        depth = nesting(tool_input, MAX_REPLY_DEPTH)
        if depth > MAX_REPLY_DEPTH:
            name = repr(getattr(block, "name", "?"))[:80]
            raise unusable_reply(
                f"its input for the tool {name} is nested more than {MAX_REPLY_DEPTH} "
                "levels deep, more than a run can store; give the tool a flatter "
                "input_schema, or ask for flatter input in the agent's instructions")
    try:
        usage = message.usage
        # The API's input_tokens leaves out what was written to or read from the cache;
        # tokens_in counts every input token the model read, so totals stay comparable
        # with caching on and off.
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        response = ModelResponse(
            content=[block.model_dump(mode="json", exclude_none=True)
                     for block in message.content],
            stop_reason=message.stop_reason,
            tokens_in=usage.input_tokens + written + read,
            tokens_out=usage.output_tokens,
            tokens_in_cached=read,
            tokens_in_cache_write=written,
        )
    except Exception as err:  # noqa: BLE001 - whatever it is, this reply cannot be used
        raise unusable_reply(
            f"it is not a Messages API reply this worker can read ({type(err).__name__})"
        ) from None
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


def unusable_reply(why: str) -> ApplicationError:
    """The non-retryable failure for a reply the run cannot take, saying `why`."""
    return ApplicationError(
        f"The model's reply cannot be used: {why}. Not retried: the same reply would fail "
        "the same way.",
        type=REPLY_UNUSABLE,
        non_retryable=True,
    )


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


def messages_kwargs(request: ModelRequest, *, prompt_cache: bool) -> dict[str, Any]:
    """The `messages.create` arguments for `request`, with cache breakpoints if asked."""
    kwargs: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
    if not prompt_cache:
        kwargs["messages"] = request.messages
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = request.tools
        return kwargs
    system, tools, messages = cache_breakpoints(request.system, request.tools, request.messages)
    kwargs["messages"] = messages
    if system:
        kwargs["system"] = system
    if tools:
        kwargs["tools"] = tools
    return kwargs


def cache_breakpoints(
    system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """System blocks, tools and messages with the breakpoints the module doc describes.

    Messages are marked only when tools are offered: without tools the agent answers in
    one call, nothing re-sends its conversation, and writing it to the cache would cost
    a quarter more for nothing. The inputs are not modified; a marked message whose
    content is a string gets it as one text block (the same prompt to the API).
    """
    marks = 0
    system_blocks: list[dict[str, Any]] = []
    marked_tools = list(tools)
    if system:
        system_blocks = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
        marks += 1
    elif marked_tools:
        marked_tools[-1] = {**marked_tools[-1], "cache_control": dict(EPHEMERAL)}
        marks += 1
    marked = list(messages)
    if not tools or not marked:
        return system_blocks, marked_tools, marked
    # The latest message, then the user message that ended the previous round's request.
    latest = len(marked) - 1
    earlier_users = [i for i in range(latest) if marked[i].get("role") == "user"]
    for index in [latest, *earlier_users[-1:]]:
        message = _with_last_block_marked(marked[index])
        if message is not None and marks < MAX_BREAKPOINTS:
            marked[index] = message
            marks += 1
    return system_blocks, marked_tools, marked


def _with_last_block_marked(message: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of `message` with a breakpoint on its last block; None if it cannot take one."""
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content or not isinstance(content[-1], dict):
        return None
    last = content[-1]
    if last.get("type") not in _MARKABLE or (last.get("type") == "text" and not last.get("text")):
        return None
    return {**message, "content": [*content[:-1], {**last, "cache_control": dict(EPHEMERAL)}]}


# Statuses that pass with time: timeout, conflict (a concurrent request), rate limit,
# and every 5xx (529 is Anthropic's "overloaded"). Judged by the status itself, not the
# SDK's exception classes, which vary between SDK versions and gateways.
_PASSING_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """Whether a model API answer with `status` may succeed if the call is repeated."""
    return status in _PASSING_STATUSES or 500 <= status <= 599


def classify_status_error(err: anthropic.APIStatusError,
                          secrets: tuple[str, ...] = ()) -> ApplicationError:
    """Rate limits, overload and 5xx pass with time; other statuses need a change.

    The API's own message is kept (it says what to change), redacted of `secrets` and of
    anything shaped like a credential: a gateway or a local server may repeat the key it
    was sent, and the message becomes the run's error, its events and its webhooks.
    """
    detail = redact(_error_message(err), secrets)[:500]
    if is_retryable_status(err.status_code):
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
    # Redacted whole before it is cut, so no cut leaves part of a key behind.
    return str(message or err.message)


def _retry_after(err: anthropic.APIStatusError) -> timedelta | None:
    value = err.response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return min(timedelta(seconds=seconds), _MAX_RETRY_AFTER)
