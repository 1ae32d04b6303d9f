"""Any OpenAI Chat Completions endpoint as a model provider: OpenAI itself, and the
servers and gateways that speak its API (Ollama, vLLM, LM Studio, LiteLLM, OpenRouter).

The workflow's requests and replies are Messages-shaped (activities/models/base.py);
this module translates them to and from Chat Completions:

- the system prompt becomes a first `system` message;
- an assistant message's text and `tool_use` blocks become one assistant message with
  `tool_calls` (each input as a JSON string of `arguments`);
- a user message's `tool_result` blocks become `tool` messages, which must directly
  follow the assistant message that called the tools, then its text a user message;
- tools become `function` tools, their `input_schema` the `parameters`.

A reply's `tool_calls` come back as `tool_use` blocks. Arguments that are not a JSON
object are not a failure of the call: the model wrote them, and may write better ones
when told. They come back as the input `{"_unparsed_arguments": "<raw>"}`, which the
workflow's schema check refuses for a tool with a required property (or without
additional ones), telling the model its input was invalid; on the next request they go
back as the model wrote them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from temporalio.exceptions import ApplicationError

from activities.models.base import behind_proxy
from activities.models.replies import (
    MAX_REPLY_DEPTH,
    check_tool_inputs,
    checked,
    status_failure,
    unavailable,
    unusable_reply,
)
from core.redaction import redact
from core.tools import UNPARSED_ARGUMENTS
from core.types import ModelRequest, ModelResponse

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

# A model call may take minutes; a model API that does not answer a connect is down.
MODEL_TIMEOUT = openai.Timeout(300.0, connect=10.0)
# The SDK refuses to build a client without a key, and a keyless local server (Ollama)
# ignores whatever it is sent. Never None: the SDK would then read OPENAI_API_KEY from
# the environment and send OpenAI's key to another provider's server.
PLACEHOLDER_API_KEY = "not-needed"
# How much of arguments that are not a JSON object goes back to the model.
_MAX_UNPARSED = 2000
# How far down a connection error's chain of causes its root is looked for.
_MAX_CAUSES = 10
# Chat Completions has no error flag on a tool's result; the model reads this instead.
_ERROR_PREFIX = "Error: "

_STOP_REASONS = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def openai_client(base_url: str | None, api_key: str | None,
                  max_connections: int) -> openai.AsyncOpenAI:
    """One async client for a Chat Completions endpoint (`base_url` None: OpenAI's).

    The SDK's own retries are off: Temporal retries the activity with backoff, so every
    attempt is visible in the run's history and the UI.
    """
    return openai.AsyncOpenAI(
        api_key=api_key or PLACEHOLDER_API_KEY,
        base_url=base_url,
        max_retries=0,
        timeout=MODEL_TIMEOUT,
        http_client=model_http_client(max_connections),
    )


def model_http_client(max_connections: int) -> httpx2.AsyncClient | None:
    """The client's HTTP transport: aiohttp with one connection per activity slot, or
    None (the SDK's default) behind a proxy (`base.behind_proxy`)."""
    if behind_proxy():
        return None
    return openai.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=max(max_connections, 1)),
        timeout=MODEL_TIMEOUT,
    )


class OpenAICompatible:
    """A Chat Completions endpoint as a `ModelProvider`.

    `name` is what traces and errors call it (`openai`, or a named provider such as
    `local`); `key_setting` names where its key is configured, for a 401's advice.
    `secrets` (the worker's configured secrets, core/redaction.py) are redacted from the
    API's error messages, which become the run's `error`, its events and its webhooks.
    """

    def __init__(self, name: str, client: openai.AsyncOpenAI, *, key_setting: str,
                 secrets: tuple[str, ...] = (),
                 max_tokens_field: MaxTokensField | None = None) -> None:
        self.name = name
        self._client = client
        self._key_setting = key_setting
        self._secrets = secrets
        # OpenAI's reasoning models refuse `max_tokens` (deprecated there in favour of
        # `max_completion_tokens`), while many compatible servers and older gateways only
        # know `max_tokens` and ignore the other, leaving replies unbounded. None: the
        # newer name for OpenAI itself, the widely understood one for everything else.
        self._max_tokens_field: MaxTokensField = max_tokens_field or (
            "max_completion_tokens" if name == "openai" else "max_tokens")

    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send one Chat Completions request; classify failures as retryable or not."""
        kwargs = chat_kwargs(request, max_tokens_field=self._max_tokens_field)
        try:
            # The SDK's `chat.completions.create` first walks the arguments against its
            # TypedDicts (aliases, files), about half of a call's CPU with hundreds in
            # flight; these are plain JSON already, so they are posted as they are, through
            # the same client, retries, errors and reply parsing.
            completion = await self._client.post(
                "/chat/completions", body=kwargs, cast_to=ChatCompletion)
        except openai.APIConnectionError as err:  # includes timeouts
            raise unavailable(
                f"Could not reach the {self.name} API ({connection_reason(err)})") from None
        except openai.APIStatusError as err:
            raise status_failure(
                self.name, err.status_code, redact(error_detail(err), self._secrets)[:500],
                key_setting=self._key_setting,
                retry_after=err.response.headers.get("retry-after"),
            ) from None
        except (openai.APIResponseValidationError, RecursionError) as err:
            # An answer the SDK cannot read (nested past what its JSON parser takes, or
            # not a Chat Completions reply): the same answer fails the same way.
            raise unusable_reply(f"the SDK cannot read it ({type(err).__name__})") from None
        return model_response(completion)

    async def close(self) -> None:
        """Close the client and its connections."""
        await self._client.close()


def connection_reason(err: openai.APIConnectionError) -> str:
    """The error's class, and its root cause's when there is one.

    The SDK's aiohttp transport reports a refused connection as a connect timeout
    (`APITimeoutError`), which would send a user looking for a slow server rather than
    a stopped one: "APITimeoutError: ConnectionRefusedError" says which it is.
    """
    root: BaseException = err
    for _ in range(_MAX_CAUSES):
        if root.__cause__ is None:
            break
        root = root.__cause__
    return type(err).__name__ if root is err else f"{type(err).__name__}: {type(root).__name__}"


def error_detail(err: openai.APIStatusError) -> str:
    """The API's own message from an error answer (not yet redacted).

    The SDK unwraps `{"error": {...}}` into `err.body`, but gateways answer in other
    shapes too: the wrapper itself, a bare string, or something else entirely.
    """
    body = err.body.get("error", err.body) if isinstance(err.body, dict) else err.body
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return err.message


# --------------------------------------------------------------------------- the request


def chat_kwargs(request: ModelRequest, *, max_tokens_field: MaxTokensField) -> dict[str, Any]:
    """The `chat.completions.create` arguments for `request`."""
    kwargs: dict[str, Any] = {
        "model": request.model,
        "messages": chat_messages(request.system, request.messages),
        max_tokens_field: request.max_tokens,
    }
    if request.tools:
        kwargs["tools"] = [function_tool(tool) for tool in request.tools]
    return kwargs


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A Messages tool definition as a Chat Completions function tool."""
    return {"type": "function", "function": {
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": tool.get("input_schema", {"type": "object"}),
    }}


def chat_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system prompt and Messages-shaped `messages` as Chat Completions messages."""
    chat: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chat.append({"role": message["role"], "content": content})
        elif message.get("role") == "assistant":
            chat.append(assistant_message(content or []))
        else:
            chat.extend(user_messages(content or []))
    return chat


def assistant_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant turn's text and tool_use blocks as one assistant message."""
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [{"id": b["id"], "type": "function",
              "function": {"name": b["name"], "arguments": _arguments(b.get("input"))}}
             for b in blocks if b.get("type") == "tool_use"]
    if not calls:
        return {"role": "assistant", "content": text}
    # Some servers refuse an empty `tool_calls` list, or empty text beside tool calls.
    return {"role": "assistant", "content": text or None, "tool_calls": calls}


def _arguments(tool_input: Any) -> str:
    """A tool_use input as `arguments`; unparsed arguments go back as the model wrote
    them, so that it sees what it sent."""
    if isinstance(tool_input, dict) and set(tool_input) == {UNPARSED_ARGUMENTS}:
        return str(tool_input[UNPARSED_ARGUMENTS])
    return json.dumps(tool_input if tool_input is not None else {})


def user_messages(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user turn's blocks: a `tool` message per tool_result, in order, then its text.

    The tool messages come first: Chat Completions wants them right after the assistant
    message whose calls they answer.
    """
    chat = [{"role": "tool", "tool_call_id": b["tool_use_id"], "content": _result_text(b)}
            for b in blocks if b.get("type") == "tool_result"]
    texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
    if texts:
        chat.append({"role": "user", "content": "\n\n".join(texts)})
    return chat


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    text = content if isinstance(content, str) else "\n".join(
        str(part.get("text", "")) for part in content
        if isinstance(part, dict) and part.get("type") == "text")
    return _ERROR_PREFIX + text if block.get("is_error") else text


# ---------------------------------------------------------------------------- the reply


def model_response(completion: ChatCompletion | str) -> ModelResponse:
    """The run's view of a Chat Completions reply, checked to travel through Temporal.

    A reply the run cannot take (no choices, not a Chat Completions reply, a tool input
    nested past what a run can store) would fail the same way on every attempt, each one
    billed: it fails at once with `unusable_reply`, saying why.
    """
    if not isinstance(completion, ChatCompletion):
        # What the SDK hands over for an answer that is not JSON: its text.
        raise unusable_reply("it is not a Chat Completions reply")
    try:
        response = _read(completion)
    except ApplicationError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever it is, this reply cannot be used
        # The SDK does not validate replies: a field may be missing or of any type.
        raise unusable_reply(
            f"it is not a Chat Completions reply this worker can read ({type(err).__name__})"
        ) from None
    check_tool_inputs(response.content)
    return checked(response)


def _read(completion: ChatCompletion) -> ModelResponse:
    if not completion.choices:
        raise unusable_reply("it has no choices")
    choice = completion.choices[0]
    content = [*_text_blocks(choice.message), *_tool_use_blocks(choice.message)]
    # Some servers leave usage (or parts of it) out; a reply without it is still a reply.
    usage = completion.usage
    details = usage.prompt_tokens_details if usage is not None else None
    return ModelResponse(
        content=content,
        stop_reason=stop_reason(choice.finish_reason, content),
        # prompt_tokens counts the cached tokens too, as tokens_in does.
        tokens_in=(usage.prompt_tokens or 0) if usage is not None else 0,
        tokens_out=(usage.completion_tokens or 0) if usage is not None else 0,
        tokens_in_cached=(details.cached_tokens or 0) if details is not None else 0,
    )


def stop_reason(finish_reason: str | None, content: list[dict[str, Any]]) -> str:
    """A `finish_reason` as the Messages stop_reason the workflow reads.

    Some servers (older Ollama, some gateways) finish with "stop" while calling tools;
    the workflow only runs tools for "tool_use", so calls decide, unless the reply was
    cut at max_tokens (its last call's arguments may be cut too).
    """
    reason = _STOP_REASONS.get(finish_reason or "stop", "end_turn")
    if reason != "max_tokens" and any(b["type"] == "tool_use" for b in content):
        return "tool_use"
    return reason


def _text_blocks(message: ChatCompletionMessage) -> list[dict[str, Any]]:
    # A refusal comes instead of content; it is what the run's user needs to read.
    text = message.content or message.refusal
    if text is None or isinstance(text, str):
        return [{"type": "text", "text": text}] if text else []
    raise unusable_reply(f"its message content is not text ({type(text).__name__})")


def _tool_use_blocks(message: ChatCompletionMessage) -> list[dict[str, Any]]:
    blocks = []
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        if function is None:
            # Only function tools are offered; anything else is not a call the run knows.
            raise unusable_reply(f"it calls a tool of type {getattr(call, 'type', None)!r}")
        blocks.append({
            "type": "tool_use",
            # Some servers leave the id out; the tool's result must name its call.
            "id": getattr(call, "id", None) or f"call_{uuid.uuid4().hex[:24]}",
            "name": function.name,
            "input": tool_input(function.arguments),
        })
    return blocks


def tool_input(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    """A tool call's `arguments` as a tool_use input (see the module doc for what is not
    a JSON object). Empty arguments are a call without any; a gateway may send an object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    except RecursionError:
        raise unusable_reply(
            f"a tool call's arguments are nested more than {MAX_REPLY_DEPTH} levels deep, "
            "more than a run can store; give the tool a flatter input_schema") from None
    if isinstance(parsed, dict):
        return parsed
    return {UNPARSED_ARGUMENTS: arguments[:_MAX_UNPARSED]}
