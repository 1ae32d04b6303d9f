"""A fake Anthropic Messages API served over real HTTP, for tests.

The real `anthropic` SDK talks to it unchanged::

    with FakeAnthropic() as fake:
        fake.reply_text("hello", tokens_in=10, tokens_out=2)
        client = anthropic.Anthropic(base_url=fake.url, api_key="test-key", max_retries=0)
        msg = client.messages.create(model="m", max_tokens=64, messages=[...])
        assert fake.requests[-1].body["model"] == "m"

Replies come from a FIFO script (`reply_text`, `reply_tool_use`, `reply_error`,
`reply_disconnect`, `enqueue`); a scripted reply with a `when` predicate is only taken by a
request it matches, so concurrent callers can each be given their own answer. When nothing in
the script fits, the default handler answers (by default `echo_reply`, whose token counts are
whitespace-word counts so tests can predict usage).

Prompt caching: every request's `cache_control` markers are checked as the real API
checks them (at most 4, type "ephemeral", never on an empty text block; else a 400). With
`FakeAnthropic(cache=PromptCache())` the fake also caches: it remembers the prefixes written
at breakpoints, per model, and reports `cache_creation_input_tokens` and
`cache_read_input_tokens` as the Messages API does (see `PromptCache`). Without it, both are
always 0.

The server is a `ThreadingHTTPServer` on a background thread, so it serves sync and async
clients alike; that plumbing is shared with the other fake model API (`tests.fakes.http_fake`).
Nothing is global: every piece of state lives on the `FakeAnthropic` instance.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.fakes.http_fake import (
    STOP_POLL_SECONDS,
    FakeHttpHandler,
    FakeHttpServer,
    Predicate,
    RequestJSON,
    parse_json_object,
    when_matches,
)

__all__ = [
    "DEFAULT_ERROR_TYPES",
    "DefaultHandler",
    "FakeAnthropic",
    "Predicate",
    "PromptCache",
    "RecordedRequest",
    "Reply",
    "cache_breakpoints",
    "cache_control_problem",
    "content_text",
    "count_input_tokens",
    "count_output_tokens",
    "count_words",
    "disconnect_reply",
    "documented_min_cache_tokens",
    "echo_reply",
    "error_reply",
    "last_user_text",
    "strip_cache_control",
    "system_text",
    "text_reply",
    "tool_use_reply",
]

DEFAULT_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}
"""The Anthropic error `type` used by `error_reply` when none is given."""

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- text helpers


def count_words(text: str) -> int:
    """Number of whitespace-separated words in `text` (the fake's notion of a token)."""
    return len(text.split())


def content_text(content: Any) -> str:
    """Plain text of a `system` value or a message's `content`.

    Accepts a string or a list of blocks. `text` blocks contribute their text and
    `tool_result` blocks their (string or text-block) content; other blocks (tool_use,
    images, thinking, ...) contribute nothing. Parts are joined with single spaces.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(content_text(block.get("content")))
    return " ".join(part for part in parts if part)


def system_text(request: RequestJSON) -> str:
    """Text of the request's `system` prompt (string or list of text blocks); "" if absent."""
    return content_text(request.get("system"))


def last_user_text(request: RequestJSON) -> str:
    """Text (see `content_text`) of the last message with role "user"; "" if there is none."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def count_input_tokens(request: RequestJSON) -> int:
    """Default `usage.input_tokens`: words in the system prompt plus in every message's text."""
    messages = request.get("messages")
    total = count_words(system_text(request))
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += count_words(content_text(message.get("content")))
    return total


def count_output_tokens(content: list[dict[str, Any]]) -> int:
    """Default `usage.output_tokens`: words in text blocks plus in each tool_use's JSON input."""
    total = 0
    for block in content:
        if block.get("type") == "text":
            total += count_words(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            total += count_words(json.dumps(block.get("input", {}), sort_keys=True))
    return total


# --------------------------------------------------------------------------- prompt cache

MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}


def documented_min_cache_tokens(model: str) -> int:
    """The shortest prefix Anthropic caches for `model`, in tokens (words, in this fake).

    4,096 for Claude Opus 4.5/4.6 and Haiku 4.5, 2,048 for Haiku 3/3.5, 1,024 for the
    others (Sonnet 4.x, Opus 4/4.1, Sonnet 3.7).
    """
    if re.search(r"opus-4-[56]|haiku-4-5", model):
        return 4096
    if re.search(r"haiku-3|3-haiku|3-5-haiku", model):
        return 2048
    return 1024


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """A `system` value or message `content` as a list of blocks (a string is a text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    return [
        {"type": "text", "text": block} if isinstance(block, str) else block
        for block in content
        if isinstance(block, str | dict)
    ]


@dataclass
class _PromptBlock:
    """One block of a request's prompt, in the order the API caches: tools, system, messages."""

    where: str
    key: str  # the block as JSON without its cache_control: what a cached prefix is made of
    tokens: int
    cache_control: Any


def _prompt_blocks(request: RequestJSON) -> list[_PromptBlock]:
    sections: list[tuple[str, str, list[Any]]] = []
    tools = request.get("tools")
    if isinstance(tools, list):
        sections.append(("tools", "tools", tools))
    sections.append(("system", "system", _content_blocks(request.get("system"))))
    messages = request.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict):
            role = str(message.get("role"))
            sections.append((f"messages[{index}].content", f"messages[{index}]:{role}",
                             _content_blocks(message.get("content"))))
    blocks: list[_PromptBlock] = []
    for where, part, items in sections:
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            bare = {key: value for key, value in item.items() if key != "cache_control"}
            tokens = 0 if part == "tools" else count_words(content_text([bare]))
            blocks.append(_PromptBlock(
                where=f"{where}[{position}]",
                key=json.dumps([part, bare], sort_keys=True, separators=(",", ":")),
                tokens=tokens,
                cache_control=item.get("cache_control"),
            ))
    return blocks


def _breakpoints(request: RequestJSON, blocks: list[_PromptBlock]) -> list[tuple[int, Any]]:
    """(block index, cache_control) of every breakpoint, top-level (automatic) one included."""
    marks = [(i, block.cache_control) for i, block in enumerate(blocks)
             if block.cache_control is not None]
    automatic = request.get("cache_control")
    if automatic is not None and blocks and all(i != len(blocks) - 1 for i, _ in marks):
        marks.append((len(blocks) - 1, automatic))
    return marks


def cache_breakpoints(request: RequestJSON) -> list[str]:
    """Where a request's cache breakpoints are, e.g. ["system[0]", "messages[2].content[0]"].

    A top-level `cache_control` (automatic caching) counts, on the last block.
    """
    blocks = _prompt_blocks(request)
    return [blocks[i].where for i, _ in _breakpoints(request, blocks)]


def strip_cache_control(value: Any) -> Any:
    """A deep copy of `value` without `cache_control` keys: the prompt as the model reads it."""
    if isinstance(value, dict):
        return {k: strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [strip_cache_control(item) for item in value]
    return value


def cache_control_problem(request: RequestJSON) -> str | None:
    """Why the real API would refuse this request's `cache_control` markers, or None."""
    blocks = _prompt_blocks(request)
    marks = _breakpoints(request, blocks)
    if len(marks) > MAX_CACHE_BREAKPOINTS:
        return (f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be "
                f"provided. Found {len(marks)}.")
    for index, control in marks:
        where = blocks[index].where
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            return f"{where}.cache_control.type: Input should be 'ephemeral'"
        if "ttl" in control and control["ttl"] not in CACHE_TTLS:
            return f"{where}.cache_control.ttl: Input should be '5m' or '1h'"
        block = json.loads(blocks[index].key)[1]
        if block.get("type") == "text" and not block.get("text"):
            return f"{where}: cache_control cannot be set for empty text blocks"
    return None


class PromptCache:
    """Anthropic's prompt caching, simulated the way the Messages API reports it.

    A breakpoint (`cache_control` on a block) asks for the prompt up to and including that
    block (tools, then system, then messages) to be cached. For each request:

    - read: the longest cached prefix found at a breakpoint or up to `lookback` blocks
      before one (the API looks about 20 blocks back); reading refreshes its TTL;
    - write: every breakpoint past that point whose prefix has at least `min_tokens`
      tokens is cached; the tokens from the read point to the last one written are the
      write;
    - `input_tokens` is the rest: the total minus reads and writes.

    Tokens are the fake's words (`count_input_tokens`; tool definitions count 0), so the
    three always add up to the usual input count. With a scripted `tokens_in`, that number
    is the total and the cached parts come out of it (never below zero). Entries are
    keyed by model and the exact prefix (cache_control markers aside), and expire after
    their TTL ("5m" by default, or "1h"). Thread-safe.
    """

    def __init__(
        self,
        *,
        min_tokens: int | Callable[[str], int] = documented_min_cache_tokens,
        lookback: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._min_tokens = min_tokens
        self.lookback = lookback
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, float]] = {}

    def min_tokens(self, model: str) -> int:
        """The shortest prefix cached for `model`."""
        return self._min_tokens(model) if callable(self._min_tokens) else self._min_tokens

    def __len__(self) -> int:
        """Live cache entries."""
        now = self._clock()
        with self._lock:
            return sum(1 for expires, _ in self._entries.values() if expires > now)

    def clear(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._entries.clear()

    def usage(self, request: RequestJSON, total_input: int) -> dict[str, Any]:
        """The `usage` input fields for answering `request`; records what it writes."""
        model = str(request.get("model"))
        blocks = _prompt_blocks(request)
        marks = _breakpoints(request, blocks)
        hashes: list[str] = []
        cumulative: list[int] = []
        digest, tokens = hashlib.sha256(model.encode()), 0
        for block in blocks:
            digest.update(block.key.encode() + b"\x00")
            hashes.append(digest.hexdigest())
            tokens += block.tokens
            cumulative.append(tokens)
        now = self._clock()
        written = {"5m": 0, "1h": 0}
        with self._lock:
            read_at = -1
            for index, _ in marks:
                for j in range(index, max(index - self.lookback, 0) - 1, -1):
                    entry = self._entries.get((model, hashes[j]))
                    if entry is not None and entry[0] > now:
                        read_at = max(read_at, j)
                        break
            read = cumulative[read_at] if read_at >= 0 else 0
            if read_at >= 0:
                ttl = self._entries[(model, hashes[read_at])][1]
                self._entries[(model, hashes[read_at])] = (now + ttl, ttl)
            done = read
            for index, control in sorted(marks, key=lambda mark: mark[0]):
                if index <= read_at or cumulative[index] < self.min_tokens(model):
                    continue
                name = str(control.get("ttl", "5m")) if isinstance(control, dict) else "5m"
                ttl = CACHE_TTLS.get(name, CACHE_TTLS["5m"])
                self._entries[(model, hashes[index])] = (now + ttl, ttl)
                written["1h" if name == "1h" else "5m"] += cumulative[index] - done
                done = cumulative[index]
        write = written["5m"] + written["1h"]
        return {
            "input_tokens": max(total_input - read - write, 0),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written["5m"],
                "ephemeral_1h_input_tokens": written["1h"],
            },
        }


# --------------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One answer the fake can give to a `POST /v1/messages`.

    Build them with `text_reply`, `tool_use_reply`, `error_reply`, `disconnect_reply` (or the
    `FakeAnthropic.reply_*` shortcuts, which also enqueue them).

    kind: "message" (200 with a Message body), "error" (Anthropic error body with `status`)
        or "disconnect" (the connection is closed without any response).
    content / stop_reason: the Message's content blocks and stop_reason.
    tokens_in / tokens_out: usage; None means computed (`count_input_tokens` of the
        request, `count_output_tokens` of `content`).
    delay: seconds to wait before answering (after `hold`, if any).
    hold: if given, the answer is held back until this event is set (or the fake stops,
        which drops the connection).
    when: if given, only requests whose JSON body satisfies it can take this reply.
        A predicate that raises counts as "does not match".
    headers: extra response headers (e.g. {"retry-after": "0"}).
    """

    kind: Literal["message", "error", "disconnect"] = "message"
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = "end_turn"
    status: int = 200
    error_type: str = ""
    message: str = ""
    tokens_in: int | None = None
    tokens_out: int | None = None
    delay: float = 0.0
    hold: threading.Event | None = None
    when: Predicate | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Concatenated text of the reply's text blocks."""
        return content_text([b for b in self.content if b.get("type") == "text"])

    @property
    def tool_use_id(self) -> str | None:
        """Id of the reply's first tool_use block, if any."""
        for block in self.content:
            if block.get("type") == "tool_use":
                return str(block["id"])
        return None

    def matches(self, request: RequestJSON) -> bool:
        """Whether this reply may answer `request` (always true without a `when`)."""
        return when_matches(self.when, request)

    def render(
        self, request: RequestJSON, request_id: str, cache: PromptCache | None = None
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body for answering `request` (not for kind "disconnect").

        With a `cache`, the usage splits the input into uncached, written and read tokens.
        """
        if self.kind == "error":
            return self.status, {
                "type": "error",
                "error": {"type": self.error_type, "message": self.message},
                "request_id": request_id,
            }
        content = copy.deepcopy(self.content)
        tokens_in = count_input_tokens(request) if self.tokens_in is None else self.tokens_in
        tokens_out = count_output_tokens(content) if self.tokens_out is None else self.tokens_out
        usage: dict[str, Any] = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if cache is not None:
            usage.update(cache.usage(request, tokens_in))
        return 200, {
            "id": _new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": request.get("model"),
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }


DefaultHandler = Callable[[RequestJSON], Reply]
"""Answers requests that no scripted reply fits: `handler(request_json) -> Reply`."""


def text_reply(
    text: str,
    *,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    delay: float = 0.0,
    stop_reason: str = "end_turn",
    hold: threading.Event | None = None,
    when: Predicate | None = None,
) -> Reply:
    """A Message with a single text block (stop_reason "end_turn" unless given)."""
    return Reply(
        content=[{"type": "text", "text": text}],
        stop_reason=stop_reason,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        delay=delay,
        hold=hold,
        when=when,
    )


def tool_use_reply(
    name: str,
    input: dict[str, Any],
    *,
    text: str | None = None,
    tool_use_id: str | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    delay: float = 0.0,
    hold: threading.Event | None = None,
    when: Predicate | None = None,
) -> Reply:
    """A Message calling tool `name` with `input` (stop_reason "tool_use").

    `text`, if given, becomes a text block before the tool_use block. Without `tool_use_id`
    a fresh "toolu_..." id is generated now, so it is readable as `reply.tool_use_id`.
    """
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.append(
        {
            "type": "tool_use",
            "id": tool_use_id or _new_id("toolu_"),
            "name": name,
            "input": copy.deepcopy(input),
        }
    )
    return Reply(
        content=content,
        stop_reason="tool_use",
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        delay=delay,
        hold=hold,
        when=when,
    )


def error_reply(
    status: int,
    error_type: str | None = None,
    message: str | None = None,
    *,
    delay: float = 0.0,
    hold: threading.Event | None = None,
    when: Predicate | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An Anthropic error response: `{"type": "error", "error": {"type", "message"}}`.

    `error_type` defaults from `DEFAULT_ERROR_TYPES` (e.g. 429 -> "rate_limit_error",
    529 -> "overloaded_error"), `message` to a generic text.
    """
    if status < 400:
        raise ValueError(f"error status must be >= 400, got {status}")
    resolved_type = error_type or DEFAULT_ERROR_TYPES.get(status, "api_error")
    return Reply(
        kind="error",
        status=status,
        error_type=resolved_type,
        message=message if message is not None else f"fake {resolved_type}",
        stop_reason=None,
        delay=delay,
        hold=hold,
        when=when,
        headers=dict(headers or {}),
    )


def disconnect_reply(
    *,
    delay: float = 0.0,
    hold: threading.Event | None = None,
    when: Predicate | None = None,
) -> Reply:
    """Close the connection without answering (the SDK raises APIConnectionError)."""
    return Reply(kind="disconnect", stop_reason=None, delay=delay, hold=hold, when=when)


def echo_reply(request: RequestJSON) -> Reply:
    """The built-in default handler: text "echo: <last user text>".

    Usage is left to the defaults: input_tokens = words in system + all messages' text
    (`count_input_tokens`), output_tokens = words in the reply text ("echo:" counts as one).
    """
    return text_reply(f"echo: {last_user_text(request)}")


# ------------------------------------------------------------------------------- recording


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, and what it answered.

    body: the parsed JSON object (None if the body was not a JSON object).
    headers: request headers with lower-case names.
    received_at / responded_at: `time.monotonic()` timestamps; `received_wall` is
        `time.time()`.
    reply: the Reply served (scripted or from the default handler); None when the request
        was rejected before reaching the script (auth/validation/unknown path) or crashed.
    scripted: whether `reply` came from the script rather than the default handler.
    status / response: the HTTP status and JSON body sent; None while the reply is pending
        or if the connection was dropped. Set just before the bytes are written, so they
        are visible as soon as the client has its answer.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: RequestJSON | None
    raw_body: bytes
    request_id: str
    received_at: float
    received_wall: float
    reply: Reply | None = None
    scripted: bool = False
    status: int | None = None
    response: dict[str, Any] | None = None
    responded_at: float | None = None

    @property
    def model(self) -> str | None:
        """The requested model, if any."""
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's `messages` ([] if missing)."""
        messages = (self.body or {}).get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def system(self) -> str:
        """Text of the request's system prompt."""
        return system_text(self.body or {})

    @property
    def last_user_text(self) -> str:
        """Text of the request's last user message."""
        return last_user_text(self.body or {})

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """Every tool_result block in the request's messages, in order."""
        return [
            block
            for message in self.messages
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    @property
    def api_key(self) -> str | None:
        """The API key sent: the `x-api-key` header, else an `Authorization: Bearer` token.

        anthropic-sdk-python 2.x sends `api_key` as a Bearer token, older versions as
        `x-api-key`; the real API accepts both.
        """
        key = self.headers.get("x-api-key")
        if key:
            return key
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    @property
    def anthropic_version(self) -> str | None:
        """The `anthropic-version` header sent."""
        return self.headers.get("anthropic-version")


# ---------------------------------------------------------------------------------- server


class _Handler(FakeHttpHandler["FakeAnthropic"]):
    extra_reasons = {529: "Overloaded"}

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.fake
        raw = self._read_body()
        body = parse_json_object(raw)
        record = RecordedRequest(
            method=self.command,
            path=urlsplit(self.path).path,
            headers=self._lowered_headers(),
            body=body,
            raw_body=raw,
            request_id=_new_id("req_"),
            received_at=time.monotonic(),
            received_wall=time.time(),
        )
        fake._add_record(record)

        rejection = fake._reject(record)
        if rejection is not None:
            self._respond(record, rejection)
            return
        assert body is not None
        if record.path == COUNT_TOKENS_PATH:
            self._respond(record, (200, {"input_tokens": count_input_tokens(body)}, {}))
            return

        try:
            reply, scripted = fake._take_reply(body)
            record.reply, record.scripted = reply, scripted
            if not fake._wait_before_answer(reply):
                self._drop_connection()
                return
            if reply.kind == "disconnect":
                self._drop_connection()
                return
            status, payload = reply.render(body, record.request_id, fake.cache)
            answer = (status, payload, reply.headers)
        except Exception as exc:
            answer = _error_answer(500, "api_error", f"fake anthropic server failed: {exc!r}")
        self._respond(record, answer)

    def _respond(
        self, record: RecordedRequest, answer: tuple[int, dict[str, Any], dict[str, str]]
    ) -> None:
        status, payload, extra_headers = answer
        if payload.get("type") == "error":
            payload.setdefault("request_id", record.request_id)
        data = json.dumps(payload).encode()
        record.status, record.response = status, payload
        record.responded_at = time.monotonic()
        self._write_response(status, "application/json", data,
                             [("request-id", record.request_id), *extra_headers.items()])


def _error_answer(
    status: int, error_type: str, message: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return status, {"type": "error", "error": {"type": error_type, "message": message}}, {}


class FakeAnthropic(FakeHttpServer[Reply, RecordedRequest]):
    """A fake Anthropic Messages API on 127.0.0.1 (ephemeral port), for the real SDK.

    Use as a context manager (`with FakeAnthropic() as fake:`) or call start()/stop(). An
    instance serves once: after stop() it cannot be started again. `url` is the base URL
    for the SDK, "http://127.0.0.1:PORT" (only after start(), like `port`).

    Requests are checked like the real API: an API key is required, as an `x-api-key` header
    or an `Authorization: Bearer` token (and must equal `api_key` if one is given), else 401;
    `model`, `max_tokens` and `messages` are required, else 400. Valid requests take the
    first matching scripted reply (FIFO), otherwise the default handler's reply. All methods
    are thread-safe.

    `cache_control` markers are validated like the real API's (`cache_control_problem`);
    with `cache` (a `PromptCache`) the fake also simulates prompt caching in its usage.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        default: DefaultHandler | None = None,
        cache: PromptCache | None = None,
    ) -> None:
        """Create (but do not start) the fake. `default` replaces `echo_reply`."""
        super().__init__(_Handler, label="FakeAnthropic", url_path="", host=host, port=port,
                         fallback=echo_reply, default=default)
        self.api_key = api_key
        self.cache = cache

    # ------------------------------------------------------------------------------ script

    def reply_text(
        self,
        text: str,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        delay: float = 0.0,
        stop_reason: str = "end_turn",
        hold: threading.Event | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a text reply (see `text_reply`); returns it."""
        return self.enqueue(
            text_reply(
                text,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                delay=delay,
                stop_reason=stop_reason,
                hold=hold,
                when=when,
            )
        )

    def reply_tool_use(
        self,
        name: str,
        input: dict[str, Any],
        *,
        text: str | None = None,
        tool_use_id: str | None = None,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        delay: float = 0.0,
        hold: threading.Event | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a tool_use reply (see `tool_use_reply`); returns it (`.tool_use_id`)."""
        return self.enqueue(
            tool_use_reply(
                name,
                input,
                text=text,
                tool_use_id=tool_use_id,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                delay=delay,
                hold=hold,
                when=when,
            )
        )

    def reply_error(
        self,
        status: int,
        error_type: str | None = None,
        message: str | None = None,
        *,
        delay: float = 0.0,
        hold: threading.Event | None = None,
        when: Predicate | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Enqueue an error reply (see `error_reply`); returns it."""
        return self.enqueue(
            error_reply(
                status, error_type, message, delay=delay, hold=hold, when=when, headers=headers
            )
        )

    def reply_disconnect(
        self,
        *,
        delay: float = 0.0,
        hold: threading.Event | None = None,
        when: Predicate | None = None,
    ) -> Reply:
        """Enqueue a dropped connection (see `disconnect_reply`); returns it."""
        return self.enqueue(disconnect_reply(delay=delay, hold=hold, when=when))

    # --------------------------------------------------------------------------- recording

    def count(self, predicate: Predicate | None = None) -> int:
        """Number of requests received, or of those whose JSON body satisfies `predicate`."""
        if predicate is None:
            with self._lock:
                return len(self._records)
        return len(self.requests_matching(predicate))

    def requests_matching(self, predicate: Predicate) -> list[RecordedRequest]:
        """Recorded requests with a JSON body satisfying `predicate(body)`."""
        return [r for r in self.requests if r.body is not None and predicate(r.body)]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `n` requests were received; returns the snapshot.

        Raises TimeoutError after `timeout` seconds. Requests are recorded on arrival,
        before any `hold`/`delay`, so this is how a test knows a held call has started.
        From async code, call it via `asyncio.to_thread`.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} requests within {timeout}s, got {len(self._records)}"
                )
            return list(self._records)

    def reset(self) -> None:
        """Forget the script, the recorded requests and any cached prefixes.

        The default handler and the cache simulation (if any) stay.
        """
        super().reset()
        if self.cache is not None:
            self.cache.clear()

    # ---------------------------------------------------------------- used by the handler

    def _reject(self, record: RecordedRequest) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        if record.path not in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            return _error_answer(404, "not_found_error", f"Not found: {record.path}")
        if record.method != "POST":
            return _error_answer(405, "invalid_request_error", f"{record.method} not allowed")
        key = record.api_key
        if not key:
            return _error_answer(
                401, "authentication_error", "x-api-key or Authorization header is required"
            )
        if self.api_key is not None and key != self.api_key:
            return _error_answer(401, "authentication_error", "invalid API key")
        if record.body is None:
            return _error_answer(400, "invalid_request_error", "request body must be a JSON object")
        required: tuple[str, ...] = ("model", "messages")
        if record.path == MESSAGES_PATH:
            required = ("model", "max_tokens", "messages")
        for name in required:
            if name not in record.body:
                return _error_answer(400, "invalid_request_error", f"{name}: Field required")
        if not isinstance(record.body["messages"], list):
            return _error_answer(400, "invalid_request_error", "messages: Input should be a list")
        if record.path == MESSAGES_PATH and b"cache_control" in record.raw_body:
            problem = cache_control_problem(record.body)
            if problem is not None:
                return _error_answer(400, "invalid_request_error", problem)
        return None

    def _wait_before_answer(self, reply: Reply) -> bool:
        """Honour `hold` then `delay`; False if the fake stopped meanwhile."""
        if reply.hold is not None:
            while not reply.hold.wait(STOP_POLL_SECONDS):
                if self._stopping.is_set():
                    return False
        if reply.delay > 0 and self._stopping.wait(reply.delay):
            return False
        return not self._stopping.is_set()
