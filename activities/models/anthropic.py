"""Claude: one Messages API request per model call.

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

from typing import Any

import anthropic
import httpx2

from activities.models.base import behind_proxy
from activities.models.replies import (
    check_tool_inputs,
    checked,
    status_failure,
    unavailable,
    unusable_reply,
)
from core.redaction import redact, secret_values
from core.settings import Settings
from core.types import ModelRequest, ModelResponse

# The default five-minute cache; a read refreshes it, and the rounds of a tool loop and
# the runs of a busy workflow come well within that. The one-hour cache costs 2× to write.
EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
# The Messages API refuses a request with more breakpoints than this.
MAX_BREAKPOINTS = 4
# Blocks that may carry cache_control (not thinking blocks, not empty text).
_MARKABLE = ("text", "tool_result", "tool_use", "image", "document")


class AnthropicProvider:
    """Claude through one async client per worker (`claude-*`, `anthropic/<model>`).

    The client's own retries are off: Temporal retries the activity with backoff, so every
    attempt is visible in the run's history and the UI. `secrets` (the worker's configured
    secrets, core/redaction.py) are redacted from the API's error messages, which become
    the run's `error`, its events and its webhooks.
    """

    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, *, prompt_cache: bool = True,
                 secrets: tuple[str, ...] = ()) -> None:
        self._client = client
        self._prompt_cache = prompt_cache
        self._secrets = secrets

    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send one Messages request; classify failures as retryable or not."""
        kwargs = messages_kwargs(request, prompt_cache=self._prompt_cache)
        try:
            message = await self._client.messages.create(**kwargs)
        except anthropic.APIConnectionError as err:  # includes timeouts
            raise unavailable(f"Could not reach the model API ({type(err).__name__})") from None
        except anthropic.APIStatusError as err:
            raise classify_status_error(err, self._secrets) from None
        except (anthropic.APIResponseValidationError, RecursionError) as err:
            # An answer the SDK cannot read (a reply nested past what its JSON parser
            # takes, or not a Messages reply): the same answer fails the same way.
            raise unusable_reply(f"the SDK cannot read it ({type(err).__name__})") from None
        return model_response(message)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._client.close()


def model_response(message: anthropic.types.Message) -> ModelResponse:
    """The run's view of a Messages reply, checked to travel through Temporal
    (`replies.checked`): an unusable reply fails at once, saying why."""
    # Checked before the blocks are dumped: a dump of an input nested past what pydantic
    # serializes fails without saying why.
    check_tool_inputs([{"name": getattr(block, "name", "?"), "input": getattr(block, "input", None)}
                       for block in message.content])
    try:
        content = [block.model_dump(mode="json", exclude_none=True)
                   for block in message.content]
    except Exception as err:  # noqa: BLE001 - whatever it is, this reply cannot be used
        raise unusable_reply(
            f"it is not a Messages API reply this worker can read ({type(err).__name__})"
        ) from None
    try:
        usage = message.usage
        # The API's input_tokens leaves out what was written to or read from the cache;
        # tokens_in counts every input token the model read, so totals stay comparable
        # with caching on and off.
        written = usage.cache_creation_input_tokens or 0
        read = usage.cache_read_input_tokens or 0
        response = ModelResponse(
            content=content,
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
    return checked(response)


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


def classify_status_error(err: anthropic.APIStatusError,
                          secrets: tuple[str, ...] = ()) -> Exception:
    """Rate limits, overload and 5xx pass with time; other statuses need a change.

    The API's own message is kept (it says what to change), redacted of `secrets` and of
    anything shaped like a credential: a gateway or a local server may repeat the key it
    was sent, and the message becomes the run's error, its events and its webhooks.
    """
    # Redacted whole before it is cut, so no cut leaves part of a key behind.
    detail = redact(_error_message(err), secrets)[:500]
    return status_failure("model", err.status_code, detail, key_setting="ANTHROPIC_API_KEY",
                          retry_after=err.response.headers.get("retry-after"))


def _error_message(err: anthropic.APIStatusError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or err.message)


# A model call may take minutes; a model API that does not answer a connect is down.
MODEL_TIMEOUT = anthropic.Timeout(300.0, connect=10.0)


def anthropic_provider(settings: Settings) -> AnthropicProvider | None:
    """Claude for a worker with ANTHROPIC_API_KEY (one client), else None."""
    if settings.anthropic_api_key is None:
        return None
    client = anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.value,
        base_url=settings.anthropic_base_url,
        # Temporal owns retries (visible in the UI); the SDK must not retry underneath.
        max_retries=0,
        timeout=MODEL_TIMEOUT,
        http_client=model_http_client(settings.worker_max_activities),
    )
    return AnthropicProvider(client, prompt_cache=settings.prompt_cache,
                             secrets=secret_values(settings))


def model_http_client(max_connections: int) -> httpx2.AsyncClient | None:
    """The client's HTTP transport: aiohttp with one connection per activity slot, or
    None (the SDK's default) behind a proxy (`base.behind_proxy`)."""
    if behind_proxy():
        return None
    return anthropic.DefaultAioHttpClient(
        # httpx2: the anthropic SDK's own fork of httpx, which its clients are typed with.
        limits=httpx2.Limits(max_connections=max(max_connections, 1)),
        timeout=MODEL_TIMEOUT,
    )
