"""The fake Anthropic server, exercised through the real `anthropic` SDK over HTTP."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import TextBlock, ToolUseBlock

try:
    from tests.fakes.anthropic_server import FakeAnthropic, Reply, text_reply
except ModuleNotFoundError:
    # Under pytest's default rootdir-less "prepend" import mode only tests/ is on sys.path.
    from fakes.anthropic_server import FakeAnthropic, Reply, text_reply  # type: ignore[no-redef]

MODEL = "claude-fake-1"
USER_HI: list[Any] = [{"role": "user", "content": "hi there"}]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.url, api_key="test-key", max_retries=0
    ) as sdk:
        yield sdk


def _create(sdk: anthropic.Anthropic, **overrides: Any) -> anthropic.types.Message:
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": USER_HI}
    kwargs.update(overrides)
    return sdk.messages.create(**kwargs)


# ------------------------------------------------------------------------------ replies


def test_text_reply_with_usage_sync(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.reply_text("Hello from the fake.", tokens_in=123, tokens_out=7)

    msg = _create(client)

    assert msg.id.startswith("msg_")
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == MODEL
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert len(msg.content) == 1
    assert isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "Hello from the fake."
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (123, 7)
    assert fake.pending() == []


async def test_text_reply_with_usage_async(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply_text("async hello", tokens_in=11, tokens_out=2)

    msg = await aclient.messages.create(model=MODEL, max_tokens=64, messages=USER_HI)

    assert isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "async hello"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 2)
    assert fake.requests[-1].headers["x-stainless-async"] != "false"


def test_max_tokens_stop_reason(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.reply_text("cut of", stop_reason="max_tokens")

    msg = _create(client)

    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 2


def test_tool_use_reply_parsed_into_tool_use_block(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    tool_input = {"query": "durable execution", "limit": 3, "filters": {"lang": ["en", "fr"]}}
    reply = fake.reply_tool_use("web_search", tool_input, text="Let me search.", tokens_out=9)

    msg = _create(client)

    assert msg.stop_reason == "tool_use"
    assert [block.type for block in msg.content] == ["text", "tool_use"]
    block = msg.content[1]
    assert isinstance(block, ToolUseBlock)
    assert block.name == "web_search"
    assert block.input == tool_input
    assert reply.tool_use_id is not None and reply.tool_use_id.startswith("toolu_")
    assert block.id == reply.tool_use_id
    assert msg.usage.output_tokens == 9


async def test_tool_use_reply_with_given_id_async(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply_tool_use("calc", {"expr": "1+1"}, tool_use_id="toolu_fixed")

    msg = await aclient.messages.create(model=MODEL, max_tokens=64, messages=USER_HI)

    assert len(msg.content) == 1
    block = msg.content[0]
    assert isinstance(block, ToolUseBlock)
    assert (block.id, block.name, block.input) == ("toolu_fixed", "calc", {"expr": "1+1"})


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error_type", "exc_class"),
    [
        (429, "rate_limit_error", anthropic.RateLimitError),
        (529, "overloaded_error", anthropic.OverloadedError),
        (500, "api_error", anthropic.InternalServerError),
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
    ],
)
def test_scripted_errors_raise_sdk_exceptions(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    status: int,
    error_type: str,
    exc_class: type[anthropic.APIStatusError],
) -> None:
    fake.reply_error(status, message=f"scripted {status}")

    with pytest.raises(exc_class) as info:
        _create(client)

    err = info.value
    assert err.status_code == status
    assert err.body == {
        "type": "error",
        "error": {"type": error_type, "message": f"scripted {status}"},
        "request_id": fake.requests[-1].request_id,
    }
    assert err.request_id == fake.requests[-1].request_id
    assert err.request_id is not None and err.request_id.startswith("req_")
    # The next call is unaffected: errors are consumed like any scripted reply.
    assert isinstance(_create(client).content[0], TextBlock)


def test_overloaded_is_an_internal_server_error(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply_error(529, "overloaded_error", "Overloaded")

    with pytest.raises(anthropic.InternalServerError) as info:
        _create(client)

    assert isinstance(info.value, anthropic.OverloadedError)
    assert info.value.status_code == 529


async def test_rate_limit_async_with_retry_after_header(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply_error(429, headers={"retry-after": "7"})

    with pytest.raises(anthropic.RateLimitError) as info:
        await aclient.messages.create(model=MODEL, max_tokens=64, messages=USER_HI)

    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_sdk_retries_through_a_scripted_error(fake: FakeAnthropic) -> None:
    fake.reply_error(529, headers={"retry-after-ms": "1"})
    fake.reply_text("second time lucky")

    with anthropic.Anthropic(base_url=fake.url, api_key="test-key", max_retries=1) as sdk:
        msg = _create(sdk)

    assert isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "second time lucky"
    assert [r.status for r in fake.requests] == [529, 200]
    assert fake.requests[1].headers["x-stainless-retry-count"] == "1"


def test_disconnect_raises_connection_error(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply_disconnect()

    with pytest.raises(anthropic.APIConnectionError):
        _create(client)

    assert fake.count() == 1
    assert fake.requests[0].status is None
    assert fake.requests[0].reply is not None and fake.requests[0].reply.kind == "disconnect"


# ------------------------------------------------------------------------------ routing


async def test_when_predicates_route_concurrent_calls(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    def system_says(role: str) -> Callable[[dict[str, Any]], bool]:
        return lambda req: f"You are the {role}" in req.get("system", "")

    roles = ["planner", "writer", "critic", "editor", "researcher"]
    # Scripted in the reverse of call order so plain FIFO would hand out wrong answers.
    for role in reversed(roles):
        fake.reply_text(f"answer for {role}", when=system_says(role))

    results = await asyncio.gather(
        *(
            aclient.messages.create(
                model=MODEL,
                max_tokens=64,
                system=f"You are the {role}.",
                messages=[{"role": "user", "content": "go"}],
            )
            for role in roles
        )
    )

    for role, msg in zip(roles, results, strict=True):
        assert isinstance(msg.content[0], TextBlock)
        assert msg.content[0].text == f"answer for {role}"
    assert fake.pending() == []
    assert all(r.scripted for r in fake.requests)


def test_when_replies_fifo_and_unconditional_replies(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    def is_writer(req: dict[str, Any]) -> bool:
        return "writer" in req.get("system", "")

    fake.reply_text("writer 1", when=is_writer)
    fake.reply_text("anyone")
    fake.reply_text("writer 2", when=is_writer)

    def text_of(msg: anthropic.types.Message) -> str:
        assert isinstance(msg.content[0], TextBlock)
        return msg.content[0].text

    # A non-writer skips the writer-only reply at the head and takes the unconditional one.
    assert text_of(_create(client, system="critic")) == "anyone"
    assert text_of(_create(client, system="writer")) == "writer 1"
    # With no match left for it, a non-writer falls through to the default echo.
    assert text_of(_create(client, system="critic")) == "echo: hi there"
    assert [r.text for r in fake.pending()] == ["writer 2"]
    assert text_of(_create(client, system="writer")) == "writer 2"
    assert [r.scripted for r in fake.requests] == [True, True, False, True]


def test_raising_predicate_counts_as_no_match(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.reply_text("needs metadata", when=lambda req: req["metadata"]["user_id"] == "u1")

    first = _create(client)
    second = _create(client, metadata={"user_id": "u1"})

    assert isinstance(first.content[0], TextBlock)
    assert first.content[0].text == "echo: hi there"
    assert isinstance(second.content[0], TextBlock)
    assert second.content[0].text == "needs metadata"


# ------------------------------------------------------------------------ default reply


def test_default_echo_token_arithmetic(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "one two three"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "four five"},
                {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {"a": "b c"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "six seven"},
                {"type": "text", "text": "eight"},
            ],
        },
    ]
    system = [{"type": "text", "text": "You are a careful writer"}]

    msg = _create(client, system=system, messages=messages)

    assert isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "echo: six seven eight"
    # system 5 + "one two three" 3 + "four five" 2 + "six seven" 2 + "eight" 1; tool_use
    # inputs are not text.
    assert msg.usage.input_tokens == 13
    assert msg.usage.output_tokens == 4
    assert msg.stop_reason == "end_turn"
    assert fake.requests[-1].scripted is False


async def test_default_echo_async_string_system(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    msg = await aclient.messages.create(
        model=MODEL,
        max_tokens=64,
        system="be   brief",
        messages=[{"role": "user", "content": "  what   is  up "}],
    )

    assert isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "echo:   what   is  up "
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (2 + 3, 4)


def test_set_default_handler_and_restore(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    seen: list[str] = []

    def handler(req: dict[str, Any]) -> Reply:
        seen.append(req["model"])
        return text_reply(f"custom for {req['model']}", tokens_in=1, tokens_out=1)

    fake.set_default(handler)
    custom = _create(client, model="model-a")
    fake.set_default(None)
    echoed = _create(client, model="model-b")

    assert isinstance(custom.content[0], TextBlock)
    assert custom.content[0].text == "custom for model-a"
    assert isinstance(echoed.content[0], TextBlock)
    assert echoed.content[0].text == "echo: hi there"
    assert seen == ["model-a"]
    served = fake.requests[0].reply
    assert served is not None and served.text == "custom for model-a"


def test_failing_default_handler_is_a_500(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    def handler(req: dict[str, Any]) -> Reply:
        raise LookupError("no reply for this test")

    fake.set_default(handler)

    with pytest.raises(anthropic.InternalServerError) as info:
        _create(client)

    assert info.value.status_code == 500
    assert "no reply for this test" in str(info.value)


# ---------------------------------------------------------------------------- recording


def test_recorded_requests(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.reply_tool_use("lookup", {"key": "k1"}, tool_use_id="toolu_abc")
    fake.reply_text("done")

    first = _create(client, system="You are the researcher.")
    assert isinstance(first.content[0], ToolUseBlock)
    follow_up: list[Any] = [
        *USER_HI,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_abc", "content": "value one"}
            ],
        },
    ]
    _create(client, system="You are the researcher.", messages=follow_up)

    assert fake.count() == 2
    assert fake.count(lambda body: "tool_result" in str(body["messages"])) == 1
    last = fake.requests[-1]
    assert last.method == "POST" and last.path == "/v1/messages"
    assert last.body is not None
    assert last.body["model"] == MODEL
    assert last.body["max_tokens"] == 64
    assert last.body["system"] == "You are the researcher."
    result_block = last.body["messages"][-1]["content"][0]
    assert result_block == {
        "type": "tool_result",
        "tool_use_id": "toolu_abc",
        "content": "value one",
    }
    assert last.tool_results == [result_block]
    assert last.body["messages"][1]["content"][0]["input"] == {"key": "k1"}
    assert last.api_key == "test-key"
    assert last.anthropic_version
    assert last.headers["content-type"] == "application/json"
    assert last.status == 200
    assert last.response is not None and last.response["content"][0]["text"] == "done"
    assert last.reply is not None and last.reply.text == "done"
    assert fake.requests[0].received_at <= last.received_at
    assert last.responded_at is not None and last.responded_at >= last.received_at

    matching = fake.requests_matching(lambda body: len(body["messages"]) == 3)
    assert matching == [last]

    fake.reply_text("left over")
    fake.reset()
    assert fake.count() == 0
    assert fake.pending() == []
    assert fake.requests == []


def test_count_tokens_endpoint(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(
        model=MODEL, system="a b", messages=[{"role": "user", "content": "c d e"}]
    )

    assert counted.input_tokens == 5
    assert fake.requests[-1].path == "/v1/messages/count_tokens"


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("missing", ["model", "max_tokens", "messages"])
def test_missing_required_field_is_400(fake: FakeAnthropic, missing: str) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": USER_HI}
    del body[missing]
    fake.reply_text("must not be consumed")

    response = httpx.post(f"{fake.url}/v1/messages", json=body, headers={"x-api-key": "k"})

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert missing in response.json()["error"]["message"]
    assert response.headers["request-id"].startswith("req_")
    assert len(fake.pending()) == 1
    assert fake.requests[-1].reply is None


def test_missing_api_key_is_401(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": USER_HI}

    response = httpx.post(f"{fake.url}/v1/messages", json=body)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_x_api_key_header_is_accepted(fake: FakeAnthropic) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": USER_HI}

    response = httpx.post(
        f"{fake.url}/v1/messages",
        json=body,
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )

    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": "echo: hi there"}]
    assert fake.requests[-1].api_key == "k"
    assert fake.requests[-1].anthropic_version == "2023-06-01"


def test_non_json_body_and_unknown_path(fake: FakeAnthropic) -> None:
    bad_json = httpx.post(f"{fake.url}/v1/messages", content=b"{nope", headers={"x-api-key": "k"})
    unknown = httpx.post(f"{fake.url}/v1/complete", json={}, headers={"x-api-key": "k"})

    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["type"] == "invalid_request_error"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found_error"
    assert fake.count() == 2


def test_wrong_api_key_is_authentication_error() -> None:
    with (
        FakeAnthropic(api_key="right-key") as fake,
        anthropic.Anthropic(base_url=fake.url, api_key="wrong-key", max_retries=0) as sdk,
    ):
        with pytest.raises(anthropic.AuthenticationError):
            _create(sdk)
        assert fake.requests[-1].api_key == "wrong-key"


# ---------------------------------------------------------------------- timing and holds


def test_delay_is_honoured_sync(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.reply_text("slow", delay=0.3)

    started = time.perf_counter()
    msg = _create(client)
    elapsed = time.perf_counter() - started

    assert isinstance(msg.content[0], TextBlock) and msg.content[0].text == "slow"
    assert elapsed >= 0.3


async def test_delay_is_honoured_async(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    fake.reply_error(529, delay=0.3)

    started = time.perf_counter()
    with pytest.raises(anthropic.OverloadedError):
        await aclient.messages.create(model=MODEL, max_tokens=64, messages=USER_HI)

    assert time.perf_counter() - started >= 0.3


async def test_hold_keeps_a_call_open_until_released(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    release = threading.Event()
    fake.reply_text("released", hold=release)

    call = asyncio.create_task(
        aclient.messages.create(model=MODEL, max_tokens=64, messages=USER_HI)
    )
    (record,) = await asyncio.to_thread(fake.wait_for_requests, 1)

    # The request has arrived and been assigned its reply, but nothing was sent back.
    assert record.reply is not None and record.reply.text == "released"
    assert record.status is None
    assert not call.done()
    release.set()
    msg = await call

    assert isinstance(msg.content[0], TextBlock) and msg.content[0].text == "released"
    assert record.status == 200


def test_stop_drops_held_calls() -> None:
    fake = FakeAnthropic().start()
    fake.reply_text("never sent", hold=threading.Event())
    errors: list[BaseException] = []

    def call() -> None:
        with anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0) as sdk:
            try:
                _create(sdk)
            except BaseException as exc:
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_for_requests(1)
    fake.stop()
    caller.join(timeout=10)

    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], anthropic.APIConnectionError)
    assert fake.requests[0].status is None
    fake.stop()  # idempotent


def test_wait_for_requests_times_out(fake: FakeAnthropic) -> None:
    with pytest.raises(TimeoutError):
        fake.wait_for_requests(1, timeout=0.01)


def test_url_requires_start_and_instances_serve_once() -> None:
    fake = FakeAnthropic()
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        assert fake.port > 0
    with pytest.raises(RuntimeError):
        fake.start()


def test_sequential_latency_has_no_nagle_stall(client: anthropic.Anthropic) -> None:
    _create(client)  # connection setup is not what is being measured
    durations = []
    for _ in range(20):
        started = time.perf_counter()
        _create(client)
        durations.append(time.perf_counter() - started)

    # A Nagle/delayed-ACK stall costs ~40 ms per call; a healthy call is a few ms.
    assert statistics.median(durations) < 0.030
    assert sum(durations) < 20 * 0.040


async def test_many_concurrent_async_calls(
    fake: FakeAnthropic, aclient: anthropic.AsyncAnthropic
) -> None:
    results = await asyncio.gather(
        *(
            aclient.messages.create(
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": f"n{i}"}]
            )
            for i in range(60)
        )
    )

    texts = [m.content[0].text for m in results if isinstance(m.content[0], TextBlock)]
    assert texts == [f"echo: n{i}" for i in range(60)]
    assert fake.count() == 60
