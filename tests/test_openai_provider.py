"""The OpenAI-compatible provider, driven through the real `openai` SDK against a fake
Chat Completions API over HTTP: translation both ways, usage, and failures."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.models.openai_compatible import (
    PLACEHOLDER_API_KEY,
    UNPARSED_ARGUMENTS,
    OpenAICompatible,
    model_http_client,
    openai_client,
)
from core.contract import MODEL_REJECTED, MODEL_REPLY_UNUSABLE, MODEL_UNAVAILABLE
from core.types import ModelRequest
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-test-0123456789abcdef"
LOOKUP = {"name": "lookup", "description": "Look a word up.",
          "input_schema": {"type": "object", "properties": {"word": {"type": "string"}},
                           "required": ["word"]}}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[OpenAICompatible]:
    model = OpenAICompatible("local", openai_client(fake.url, KEY, 4),
                             key_setting="LOOPLLAMA_PROVIDER_LOCAL_API_KEY", secrets=(KEY,))
    yield model
    await model.close()


def ask(text: str = "hi there", **fields: Any) -> ModelRequest:
    """A request with one user message (and whatever else `fields` set)."""
    return ModelRequest(**{"model": "llama3.2", "system": "",
                           "messages": [{"role": "user", "content": text}], **fields})


async def failure(provider: OpenAICompatible, request: ModelRequest | None = None
                  ) -> ApplicationError:
    """The failure `provider` raises for `request` (a plain question by default)."""
    with pytest.raises(ApplicationError) as raised:
        await provider.call(request or ask())
    return raised.value


# ------------------------------------------------------------------------ replies, usage


async def test_a_text_reply_with_its_tokens(fake: FakeOpenAI,
                                            provider: OpenAICompatible) -> None:
    fake.reply_text("Hello there.", prompt_tokens=120, completion_tokens=3, cached_tokens=64)

    response = await provider.call(ask())

    assert response.content == [{"type": "text", "text": "Hello there."}]
    assert response.stop_reason == "end_turn"
    assert (response.tokens_in, response.tokens_out) == (120, 3)
    assert (response.tokens_in_cached, response.tokens_in_cache_write) == (64, 0)
    (sent,) = fake.requests
    assert sent.body is not None
    assert sent.body["model"] == "llama3.2"
    assert sent.messages == [{"role": "user", "content": "hi there"}]
    assert "tools" not in sent.body


async def test_the_default_echo_counts_words(provider: OpenAICompatible) -> None:
    response = await provider.call(ask("one two three"))

    assert response.text() == "echo: one two three"
    assert (response.tokens_in, response.tokens_out, response.tokens_in_cached) == (3, 4, 0)


async def test_the_system_prompt_is_the_first_message(fake: FakeOpenAI,
                                                      provider: OpenAICompatible) -> None:
    await provider.call(ask(system="Be brief."))

    assert fake.requests[-1].messages == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hi there"}]


async def test_a_reply_cut_at_max_tokens(fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_text("It was a dark and", finish_reason="length")

    assert (await provider.call(ask())).stop_reason == "max_tokens"


# ------------------------------------------------------------------------------- tools


async def test_a_tool_call_round_trip(fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    reply = fake.reply_tool_calls([("lookup", {"word": "llama"})], text="Looking it up.")

    first = await provider.call(ask("what is a llama?", tools=[LOOKUP]))

    (call_id,) = reply.call_ids
    assert first.stop_reason == "tool_use"
    assert first.content == [
        {"type": "text", "text": "Looking it up."},
        {"type": "tool_use", "id": call_id, "name": "lookup", "input": {"word": "llama"}},
    ]
    assert fake.requests[0].body is not None
    assert fake.requests[0].body["tools"] == [{"type": "function", "function": {
        "name": "lookup", "description": "Look a word up.",
        "parameters": LOOKUP["input_schema"]}}]

    fake.reply_text("A South American camelid.")
    second = await provider.call(ask("what is a llama?", tools=[LOOKUP], messages=[
        {"role": "user", "content": "what is a llama?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call_id,
             "content": [{"type": "text", "text": "a camelid"}]},
            {"type": "text", "text": "Answer in one line."}]},
    ]))

    assert second.text() == "A South American camelid."
    assert fake.requests[1].messages == [
        {"role": "user", "content": "what is a llama?"},
        {"role": "assistant", "content": "Looking it up.", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "lookup", "arguments": '{"word": "llama"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "a camelid"},
        {"role": "user", "content": "Answer in one line."},
    ]


async def test_parallel_calls_and_a_failed_tool(fake: FakeOpenAI,
                                                provider: OpenAICompatible) -> None:
    uses = [{"type": "tool_use", "id": f"call_{n}", "name": "lookup", "input": {"word": w}}
            for n, w in enumerate(["a", "b"])]

    await provider.call(ask(tools=[LOOKUP], messages=[
        {"role": "user", "content": "look up a and b"},
        {"role": "assistant", "content": uses},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_0", "content": "first"},
            {"type": "tool_result", "tool_use_id": "call_1", "content": "no such word",
             "is_error": True}]},
    ]))

    assistant, *results = fake.requests[-1].messages[1:]
    assert assistant["content"] is None
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_0", "call_1"]
    assert results == [
        {"role": "tool", "tool_call_id": "call_0", "content": "first"},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no such word"},
    ]


async def test_arguments_that_are_not_json_reach_the_model_again(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_tool_calls([("lookup", '{"word": "llama"'), ("lookup", "[1, 2]")])

    response = await provider.call(ask(tools=[LOOKUP]))

    assert [use["input"] for use in response.tool_uses()] == [
        {UNPARSED_ARGUMENTS: '{"word": "llama"'}, {UNPARSED_ARGUMENTS: "[1, 2]"}]
    await provider.call(ask(tools=[LOOKUP], messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": response.content[:1]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id":
                                      response.content[0]["id"], "content": "invalid input",
                                      "is_error": True}]},
    ]))
    sent_call = fake.requests[-1].messages[1]["tool_calls"][0]
    assert sent_call["function"]["arguments"] == '{"word": "llama"'


async def test_long_unparsed_arguments_are_cut(fake: FakeOpenAI,
                                               provider: OpenAICompatible) -> None:
    fake.reply_tool_calls([("lookup", "x" * 5000)])

    (use,) = (await provider.call(ask(tools=[LOOKUP]))).tool_uses()

    assert use["input"] == {UNPARSED_ARGUMENTS: "x" * 2000}


async def test_tool_calls_decide_whatever_the_finish_reason(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_tool_calls([("lookup", {"word": "a"})], finish_reason="stop")

    assert (await provider.call(ask(tools=[LOOKUP]))).stop_reason == "tool_use"


@pytest.mark.parametrize("depth", [150, 100_000])  # past the run's limit; past Python's
async def test_a_tool_input_nested_too_deep_is_unusable(
        fake: FakeOpenAI, provider: OpenAICompatible, depth: int) -> None:
    fake.reply_tool_calls([("lookup", '{"word": ' + "[" * depth + "]" * depth + "}")])

    err = await failure(provider, ask(tools=[LOOKUP]))

    assert (err.type, err.non_retryable) == (MODEL_REPLY_UNUSABLE, True)
    assert "nested more than" in err.message


# ------------------------------------------------------------------------ max tokens, keys


@pytest.mark.parametrize(("name", "flag", "sent"), [
    ("openai", None, "max_completion_tokens"),
    ("local", None, "max_tokens"),
    ("openai", "max_tokens", "max_tokens"),
    ("local", "max_completion_tokens", "max_completion_tokens"),
])
async def test_the_max_tokens_field(fake: FakeOpenAI, name: str, flag: Any, sent: str) -> None:
    model = OpenAICompatible(name, openai_client(fake.url, KEY, 1), key_setting="KEY",
                             max_tokens_field=flag)
    try:
        await model.call(ask(max_tokens=77))
    finally:
        await model.close()

    body = fake.requests[-1].body
    assert body is not None
    other = {"max_tokens", "max_completion_tokens"} - {sent}
    assert body[sent] == 77
    assert not other & set(body)


async def test_the_key_is_sent_as_a_bearer_token(fake: FakeOpenAI,
                                                 provider: OpenAICompatible) -> None:
    await provider.call(ask())

    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_without_a_key_the_placeholder_is_sent_never_openais(
        fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leak-0123")
    model = OpenAICompatible("local", openai_client(fake.url, None, 1), key_setting="KEY")
    try:
        await model.call(ask())
    finally:
        await model.close()

    assert fake.requests[-1].api_key == PLACEHOLDER_API_KEY


# ------------------------------------------------------------------------------ failures


async def test_a_rate_limit_is_retried_after_its_delay(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_error(429, "Rate limit reached for requests", headers={"retry-after": "3"})

    err = await failure(provider)

    assert (err.type, err.non_retryable) == (MODEL_UNAVAILABLE, False)
    assert err.next_retry_delay == timedelta(seconds=3)
    assert "The local API answered 429 (Rate limit reached for requests)" in err.message


async def test_a_server_error_is_retried(fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_error(500, "The server had an error while processing your request.")

    err = await failure(provider)

    assert (err.type, err.non_retryable, err.next_retry_delay) == (
        MODEL_UNAVAILABLE, False, None)
    assert "500" in err.message


async def test_a_bad_request_fails_at_once_with_the_apis_message(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_error(400, "model 'llama9' not found, try pulling it first",
                     param="model", code="model_not_found")

    err = await failure(provider)

    assert (err.type, err.non_retryable) == (MODEL_REJECTED, True)
    assert "(400: model 'llama9' not found, try pulling it first)" in err.message
    assert "check the agent's model name" in err.message


async def test_an_error_body_in_another_shape_still_says_why(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_raw({"message": "context window exceeded"}, status=400)
    fake.reply_raw(b"upstream is sad", status=422, content_type="text/plain")

    assert "context window exceeded" in (await failure(provider)).message
    assert "upstream is sad" in (await failure(provider)).message


async def test_a_key_echoed_by_the_server_is_redacted() -> None:
    secret = "gateway-pass-not-shaped-like-a-key"
    with FakeOpenAI(api_key="the-right-key") as fake:
        model = OpenAICompatible(
            "local", openai_client(fake.url, secret, 1), secrets=(secret,),
            key_setting="LOOPLLAMA_PROVIDER_LOCAL_API_KEY")
        try:
            err = await failure(model)
        finally:
            await model.close()

    assert (err.type, err.non_retryable) == (MODEL_REJECTED, True)
    assert secret in str(fake.requests[-1].response)
    assert secret not in err.message
    assert "Incorrect API key provided: [redacted]" in err.message
    assert "check LOOPLLAMA_PROVIDER_LOCAL_API_KEY on the worker" in err.message


async def test_an_unreachable_server_is_retried() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = OpenAICompatible("local", openai_client(f"http://127.0.0.1:{port}/v1", KEY, 1),
                             key_setting="KEY")
    try:
        err = await failure(model)
    finally:
        await model.close()

    assert (err.type, err.non_retryable) == (MODEL_UNAVAILABLE, False)
    # The SDK's aiohttp transport calls a refused connection a connect timeout.
    assert err.message == "Could not reach the local API (APITimeoutError: ConnectionRefusedError)"


@pytest.mark.parametrize("body", [
    {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
    {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0}]},
])
async def test_a_reply_without_a_message_is_unusable(
        fake: FakeOpenAI, provider: OpenAICompatible, body: dict[str, Any]) -> None:
    fake.reply_raw(body)

    err = await failure(provider)

    assert (err.type, err.non_retryable) == (MODEL_REPLY_UNUSABLE, True)


async def test_a_reply_the_sdk_cannot_parse_is_unusable(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_raw(b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")

    err = await failure(provider)

    assert (err.type, err.non_retryable) == (MODEL_REPLY_UNUSABLE, True)
    assert "the SDK cannot read it (RecursionError)" in err.message


async def test_a_reply_that_is_not_json_is_unusable(
        fake: FakeOpenAI, provider: OpenAICompatible) -> None:
    fake.reply_raw(b"<html>gateway</html>", content_type="text/html")

    err = await failure(provider)

    assert (err.type, err.non_retryable) == (MODEL_REPLY_UNUSABLE, True)
    assert "not a Chat Completions reply" in err.message


# ------------------------------------------------------------------------------ the client


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def test_the_client_uses_aiohttp_with_a_connection_per_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    client = model_http_client(750)

    assert client is not None
    transport: Any = client._transport
    assert type(transport).__name__ == "AiohttpTransport"
    assert transport.limits.max_connections == 750


def test_a_proxy_keeps_the_sdk_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")

    assert model_http_client(100) is None


async def test_close_closes_the_client(fake: FakeOpenAI) -> None:
    client = openai_client(fake.url, KEY, 1)
    model = OpenAICompatible("local", client, key_setting="KEY")

    await model.close()

    assert client.is_closed()
