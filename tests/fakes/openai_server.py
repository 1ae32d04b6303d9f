"""A fake OpenAI Chat Completions API served over real HTTP, for tests.

The real `openai` SDK talks to it unchanged::

    with FakeOpenAI() as fake:
        fake.reply_text("hello", prompt_tokens=10, completion_tokens=2, cached_tokens=4)
        client = openai.AsyncOpenAI(base_url=fake.url, api_key="test-key", max_retries=0)
        completion = await client.chat.completions.create(model="m", messages=[...])
        assert fake.requests[-1].body["model"] == "m"

Replies come from a FIFO script (`reply_text`, `reply_tool_calls`, `reply_error`,
`reply_raw`, `enqueue`); a scripted reply with a `when` predicate is only taken by a
request it matches. When nothing in the script fits, the default handler answers (by
default `echo_reply`, whose token counts are whitespace-word counts so tests can predict
usage). Only `POST /v1/chat/completions` is served; other paths get a 404.

With `api_key`, a request whose Bearer token differs gets a 401 whose message repeats the
key it was sent, as a careless gateway would (OpenAI itself masks most of it).

The server is a `ThreadingHTTPServer` on a background thread, so it serves sync and async
clients alike; that plumbing is shared with the other fake model API (`tests.fakes.http_fake`).
Nothing is global: every piece of state lives on the `FakeOpenAI` instance.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.fakes.http_fake import (
    FakeHttpHandler,
    FakeHttpServer,
    Predicate,
    RequestJSON,
    parse_json_object,
    when_matches,
)

__all__ = [
    "CHAT_COMPLETIONS_PATH",
    "DefaultHandler",
    "FakeOpenAI",
    "Predicate",
    "RecordedRequest",
    "Reply",
    "count_words",
    "echo_reply",
    "error_reply",
    "last_user_text",
    "message_text",
    "prompt_tokens",
    "raw_reply",
    "text_reply",
    "tool_calls_reply",
]

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"

# The OpenAI error `type` used by `error_reply` when none is given.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- text helpers


def count_words(text: str) -> int:
    """Number of whitespace-separated words in `text` (the fake's notion of a token)."""
    return len(text.split())


def message_text(message: Any) -> str:
    """A chat message's text: its string content, or its text parts joined by spaces."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return " ".join(str(part.get("text", "")) for part in content
                    if isinstance(part, dict) and part.get("type") == "text")


def last_user_text(request: RequestJSON) -> str:
    """Text of the last message with role "user"; "" if there is none."""
    for message in reversed(_messages(request)):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def prompt_tokens(request: RequestJSON) -> int:
    """Default `usage.prompt_tokens`: words in every message's text (system included)."""
    return sum(count_words(message_text(message)) for message in _messages(request))


def _messages(request: RequestJSON) -> list[dict[str, Any]]:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


# --------------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One answer the fake can give to a `POST /v1/chat/completions`.

    Build them with `text_reply`, `tool_calls_reply`, `error_reply`, `raw_reply` (or the
    `FakeOpenAI.reply_*` shortcuts, which also enqueue them).

    kind: "completion" (200 with a ChatCompletion body), "error" (`status` with an OpenAI
        error body `{"error": {"message", "type", "param", "code"}}`) or "raw" (`status`
        with `body` as it is: bytes sent as they are, anything else as JSON).
    message: the assistant message of the completion's one choice.
    prompt_tokens / completion_tokens: usage; None means computed (`prompt_tokens` of the
        request, words in the reply's text and tool arguments).
    cached_tokens: `usage.prompt_tokens_details.cached_tokens`.
    when: if given, only requests whose JSON body satisfies it can take this reply.
        A predicate that raises counts as "does not match".
    headers: extra response headers (e.g. {"retry-after": "3"}).
    """

    kind: Literal["completion", "error", "raw"] = "completion"
    message: dict[str, Any] = field(default_factory=dict)
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    when: Predicate | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def call_ids(self) -> list[str]:
        """Ids of the reply's tool calls, in order."""
        return [str(call["id"]) for call in self.message.get("tool_calls") or []]

    def matches(self, request: RequestJSON) -> bool:
        """Whether this reply may answer `request` (always true without a `when`)."""
        return when_matches(self.when, request)

    def render(self, request: RequestJSON) -> tuple[int, Any]:
        """HTTP status and body for answering `request`."""
        if self.kind != "completion":
            return self.status, copy.deepcopy(self.body)
        message = {"role": "assistant", "content": None, **copy.deepcopy(self.message)}
        used_in = prompt_tokens(request) if self.prompt_tokens is None else self.prompt_tokens
        used_out = (self._output_words(message) if self.completion_tokens is None
                    else self.completion_tokens)
        return 200, {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model"),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": self.finish_reason}],
            "usage": {
                "prompt_tokens": used_in,
                "completion_tokens": used_out,
                "total_tokens": used_in + used_out,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            },
        }

    @staticmethod
    def _output_words(message: dict[str, Any]) -> int:
        words = count_words(message.get("content") or "")
        for call in message.get("tool_calls") or []:
            words += count_words(str(call["function"]["arguments"]))
        return words


DefaultHandler = Callable[[RequestJSON], Reply]
"""Answers requests that no scripted reply fits: `handler(request_json) -> Reply`."""


def text_reply(
    text: str,
    *,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cached_tokens: int = 0,
    finish_reason: str = "stop",
    when: Predicate | None = None,
) -> Reply:
    """A completion whose message is `text` (finish_reason "stop" unless given)."""
    return Reply(
        message={"content": text},
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        when=when,
    )


def tool_calls_reply(
    calls: list[tuple[str, dict[str, Any] | str]],
    *,
    text: str | None = None,
    finish_reason: str = "tool_calls",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    when: Predicate | None = None,
) -> Reply:
    """A completion calling each (name, arguments) of `calls` (finish_reason "tool_calls").

    Arguments given as a dict are sent as its JSON; a string is sent as it is, so a test
    can send arguments that are not JSON. Every call gets a fresh "call_..." id now,
    readable as `reply.call_ids`.
    """
    tool_calls = [
        {"id": _new_id("call_"), "type": "function", "function": {
            "name": name,
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        }}
        for name, arguments in calls
    ]
    return Reply(
        message={"content": text, "tool_calls": tool_calls},
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        when=when,
    )


def error_reply(
    status: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    when: Predicate | None = None,
) -> Reply:
    """An OpenAI error answer: `{"error": {"message", "type", "param", "code"}}`.

    `error_type` defaults by status (429 -> "rate_limit_exceeded", 5xx -> "server_error"),
    `message` to a generic text.
    """
    if status < 400:
        raise ValueError(f"error status must be >= 400, got {status}")
    resolved_type = error_type or _ERROR_TYPES.get(status, "server_error")
    return Reply(
        kind="error",
        status=status,
        body={"error": {
            "message": message if message is not None else f"fake {resolved_type}",
            "type": resolved_type,
            "param": param,
            "code": code,
        }},
        headers=dict(headers or {}),
        when=when,
    )


def raw_reply(
    body: Any,
    *,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    when: Predicate | None = None,
) -> Reply:
    """An answer with `body` as it is (bytes sent as they are, anything else as JSON)
    and `content_type`, for replies that are not what the API sends."""
    return Reply(kind="raw", status=status, body=body, content_type=content_type,
                 headers=dict(headers or {}), when=when)


def echo_reply(request: RequestJSON) -> Reply:
    """The built-in default handler: text "echo: <last user text>".

    Usage is left to the defaults: prompt_tokens = words in all messages' text
    (`prompt_tokens`), completion_tokens = words in the reply ("echo:" counts as one),
    cached_tokens = 0.
    """
    return text_reply(f"echo: {last_user_text(request)}")


# ------------------------------------------------------------------------------- recording


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, and what it answered.

    body: the parsed JSON object (None if the body was not a JSON object).
    headers: request headers with lower-case names.
    received_at: `time.monotonic()` on arrival.
    reply: the Reply served; None when the request was rejected before reaching the
        script (unknown path, wrong key, invalid body).
    status / response: the HTTP status and body sent.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: RequestJSON | None
    received_at: float
    reply: Reply | None = None
    status: int | None = None
    response: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's `messages` ([] if missing)."""
        return _messages(self.body or {})

    @property
    def api_key(self) -> str | None:
        """The `Authorization: Bearer` token sent, if any."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None


# ---------------------------------------------------------------------------------- server


class _Handler(FakeHttpHandler["FakeOpenAI"]):
    def do_POST(self) -> None:
        fake = self.fake
        raw = self._read_body()
        record = RecordedRequest(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=self._lowered_headers(),
            body=parse_json_object(raw),
            received_at=time.monotonic(),
        )
        fake._add_record(record)
        answer = fake._answer(record)
        self._respond(record, answer)

    def _respond(self, record: RecordedRequest, answer: tuple[int, Any, str, dict[str, str]]
                 ) -> None:
        status, body, content_type, extra_headers = answer
        record.status, record.response = status, body
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._write_response(status, content_type, data,
                             [("x-request-id", _new_id("req_")), *extra_headers.items()])


def _error(status: int, message: str, error_type: str = "invalid_request_error",
           ) -> tuple[int, Any, str, dict[str, str]]:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    return status, body, "application/json", {}


class FakeOpenAI(FakeHttpServer[Reply, RecordedRequest]):
    """A fake OpenAI Chat Completions API on 127.0.0.1 (ephemeral port), for the real SDK.

    Use as a context manager (`with FakeOpenAI() as fake:`) or call start()/stop(). An
    instance serves once; stop() also drops open connections. `url` is the base URL for
    the SDK, "http://127.0.0.1:PORT/v1" (only while serving, like `port`).

    Requests are checked like the real API: with `api_key`, the Bearer token must equal
    it, else 401; `model` and `messages` (a list) are required, else 400. Valid requests
    take the first matching scripted reply (FIFO), otherwise the default handler's reply.
    All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        default: DefaultHandler | None = None,
    ) -> None:
        """Create (but do not start) the fake. `default` replaces `echo_reply`."""
        super().__init__(_Handler, label="FakeOpenAI", url_path="/v1", host=host, port=port,
                         fallback=echo_reply, default=default)
        self.api_key = api_key

    @property
    def port(self) -> int:
        """The TCP port being served (only while serving)."""
        if self._server is None or self._stopping.is_set():
            raise RuntimeError("FakeOpenAI not serving")
        return self._server.server_port

    # ------------------------------------------------------------------------------ script

    def reply_text(
        self,
        text: str,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int = 0,
        finish_reason: str = "stop",
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a text reply (see `text_reply`); returns it."""
        return self.enqueue(text_reply(
            text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cached_tokens=cached_tokens, finish_reason=finish_reason, when=when))

    def reply_tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any] | str]],
        *,
        text: str | None = None,
        finish_reason: str = "tool_calls",
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a tool calls reply (see `tool_calls_reply`); returns it (`.call_ids`)."""
        return self.enqueue(tool_calls_reply(
            calls, text=text, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, when=when))

    def reply_error(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue an error reply (see `error_reply`); returns it."""
        return self.enqueue(error_reply(
            status, message, error_type=error_type, param=param, code=code,
            headers=headers, when=when))

    def reply_raw(
        self,
        body: Any,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a reply sent as it is (see `raw_reply`); returns it."""
        return self.enqueue(raw_reply(
            body, status=status, content_type=content_type, headers=headers, when=when))

    # ---------------------------------------------------------------- used by the handler

    def _answer(self, record: RecordedRequest) -> tuple[int, Any, str, dict[str, str]]:
        rejection = self._reject(record)
        if rejection is not None:
            return rejection
        assert record.body is not None
        try:
            reply, _ = self._take_reply(record.body)
            record.reply = reply
            status, body = reply.render(record.body)
        except Exception as exc:
            return _error(500, f"fake openai server failed: {exc!r}", "server_error")
        return status, body, reply.content_type, reply.headers

    def _reject(self, record: RecordedRequest) -> tuple[int, Any, str, dict[str, str]] | None:
        if record.path != CHAT_COMPLETIONS_PATH:
            return _error(404, f"Invalid URL (POST {record.path})")
        if self.api_key is not None and record.api_key != self.api_key:
            return _error(401, f"Incorrect API key provided: {record.api_key}.")
        if record.body is None:
            return _error(400, "We could not parse the JSON body of your request.")
        for name in ("model", "messages"):
            if name not in record.body:
                return _error(400, f"Missing required parameter: '{name}'.")
        if not isinstance(record.body["messages"], list):
            return _error(400, "Invalid type for 'messages': expected an array.")
        return None
