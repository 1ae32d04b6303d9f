"""Prompt caching: where Claude calls put cache breakpoints, and the usage runs report.

The run tests go through the whole stack (API, Temporal, worker, the real `anthropic` SDK)
to a fake Messages API that simulates the cache as the real one reports it (`PromptCache`:
the documented minimum prefix per model, words as tokens).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import anthropic
import httpx
import pytest
from temporalio.client import Client

from activities.models.anthropic import MAX_BREAKPOINTS, cache_breakpoints, messages_kwargs
from core.settings import Settings, SettingsError
from core.types import ModelRequest
from tests.conftest import for_role, unique_tag
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    PromptCache,
    RecordedRequest,
    count_input_tokens,
    count_words,
    tool_use_reply,
)
from tests.fakes.anthropic_server import cache_breakpoints as sent_breakpoints
from tests.fakes.tool_server import ToolServer
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_worker

MODEL = "claude-sonnet-4-6"  # documented minimum cacheable prefix: 1,024 tokens
# Instructions above that minimum, as a real agent's often are.
RULES = " ".join(f"rule{i % 97}" for i in range(1_200))
DOCUMENT = " ".join(f"fact{i % 89}" for i in range(300))
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string"}},
    "required": ["topic"],
}


@pytest.fixture(scope="module")
def cache_fake() -> Iterator[FakeAnthropic]:
    """A fake Messages API that caches prompt prefixes like the real one."""
    with FakeAnthropic(cache=PromptCache()) as fake:
        yield fake


@pytest.fixture(scope="module")
def tools() -> Iterator[ToolServer]:
    """The `lookup` tool's endpoint: every call returns the same 300-word document."""
    with ToolServer() as server:
        server.state.reply = json.dumps({"document": DOCUMENT})
        yield server


@pytest.fixture
def settings(settings: Settings, cache_fake: FakeAnthropic) -> Settings:
    """The suite's settings, with Claude calls going to the caching fake."""
    return replace(settings, anthropic_base_url=cache_fake.url, http_allowlist=("127.0.0.1",))


def agent(role: str, tag: str, *, rules: bool = True, **fields: Any) -> dict[str, Any]:
    instructions = f"You are the {role}. [{tag}]" + (f" {RULES}" if rules else "")
    return {"role": role, "model": MODEL, "instructions": instructions, **fields}


def lookup_tool(tools: ToolServer, tag: str) -> dict[str, Any]:
    return {"name": "lookup", "description": f"Look a topic up. [{tag}]",
            "input_schema": LOOKUP_SCHEMA, "url": tools.url("/lookup")}


def script_tool_loop(fake: FakeAnthropic, rounds: int, when: Callable[[Any], bool]) -> None:
    for i in range(rounds):
        fake.reply_tool_use("lookup", {"topic": f"topic {i}"}, when=when)
    fake.reply_text("Findings: all topics covered.", when=when)


def usage(request: RecordedRequest) -> dict[str, int]:
    assert request.response is not None and request.status == 200, request.response
    return dict(request.response["usage"])


def billed(request: RecordedRequest) -> float:
    """Input billed in uncached-token equivalents: writes at 1.25×, reads at 0.1×."""
    u = usage(request)
    return (u["input_tokens"] + 1.25 * u["cache_creation_input_tokens"]
            + 0.1 * u["cache_read_input_tokens"])


def expected_counters(requests: list[RecordedRequest]) -> dict[str, int]:
    """What a step should report for these calls: every input token, and the cached parts."""
    parts = [usage(r) for r in requests]
    return {
        "tokens_in": sum(u["input_tokens"] + u["cache_creation_input_tokens"]
                         + u["cache_read_input_tokens"] for u in parts),
        "tokens_in_cached": sum(u["cache_read_input_tokens"] for u in parts),
        "tokens_in_cache_write": sum(u["cache_creation_input_tokens"] for u in parts),
        "tokens_out": sum(u["output_tokens"] for u in parts),
    }


def counters(obj: dict[str, Any]) -> dict[str, int]:
    keys = ("tokens_in", "tokens_in_cached", "tokens_in_cache_write", "tokens_out")
    return {key: obj[key] for key in keys}


async def run_to_completion(api: httpx.AsyncClient, workflow_id: str, text: str) -> dict[str, Any]:
    run = await wait_for_status(api, (await trigger(api, workflow_id, text))["id"],
                                "completed", "failed")
    assert run["status"] == "completed", run["error"]
    return run


# ------------------------------------------------------------------- through the stack


async def test_tool_loop_reads_the_conversation_so_far_and_usage_adds_up(
    api: httpx.AsyncClient, worker: Any, cache_fake: FakeAnthropic, tools: ToolServer
) -> None:
    tag = unique_tag()
    researcher, writer = for_role(tag, "researcher"), for_role(tag, "writer")
    script_tool_loop(cache_fake, 3, researcher)
    cache_fake.reply_text("The brief.", when=writer)
    workflow = await create_workflow(
        api, [agent("researcher", tag, tools=["lookup"]), agent("writer", tag, rules=False)],
        tools=[lookup_tool(tools, tag)],
    )

    run = await run_to_completion(api, workflow["id"], "Research feature flags.")

    calls = cache_fake.requests_matching(researcher)
    assert len(calls) == 4
    for k, call in enumerate(calls):
        assert call.body is not None
        # Tools + system, the previous round's end, the latest message; tools unmarked.
        previous = [f"messages[{2 * k - 2}].content[0]"] if k else []
        assert sent_breakpoints(call.body) == [
            "system[0]", *previous, f"messages[{2 * k}].content[0]"
        ]
        assert "cache_control" not in json.dumps(call.body["tools"])
        u = usage(call)
        # tokens_in keeps its meaning: every input token, however it was billed.
        assert (u["input_tokens"] + u["cache_creation_input_tokens"]
                + u["cache_read_input_tokens"]) == count_input_tokens(call.body)
        if k == 0:
            assert u["cache_read_input_tokens"] == 0
            assert u["cache_creation_input_tokens"] == count_input_tokens(call.body)
        else:
            # Each round reads the whole previous request from the cache.
            assert u["cache_read_input_tokens"] == count_input_tokens(calls[k - 1].body or {})
        assert billed(call) < count_input_tokens(call.body) or k == 0

    (writer_call,) = cache_fake.requests_matching(writer)
    assert writer_call.body is not None
    # No tools, one call: only the system is marked, and under the model's minimum
    # (1,024 tokens) the breakpoint costs nothing.
    assert sent_breakpoints(writer_call.body) == ["system[0]"]
    assert isinstance(writer_call.body["messages"][0]["content"], str)
    writer_usage = usage(writer_call)
    assert writer_usage["cache_creation_input_tokens"] == 0
    assert writer_usage["cache_read_input_tokens"] == 0
    assert writer_usage["input_tokens"] == count_input_tokens(writer_call.body)

    steps = {step["role"]: step for step in run["steps"]}
    assert counters(steps["researcher"]) == expected_counters(calls)
    assert counters(steps["writer"]) == expected_counters([writer_call])
    assert counters(run) == expected_counters([*calls, writer_call])
    assert run["tokens_in_cached"] > 0 and run["tokens_in_cache_write"] > 0
    assert len(tools.requests()) >= 3


async def test_later_runs_read_an_agents_tools_and_instructions_from_the_cache(
    api: httpx.AsyncClient, worker: Any, cache_fake: FakeAnthropic, tools: ToolServer
) -> None:
    tag = unique_tag()
    solo = for_role(tag, "solo")
    workflow = await create_workflow(api, [agent("solo", tag, tools=["lookup"])],
                                     tools=[lookup_tool(tools, tag)])
    system_words = count_words(agent("solo", tag)["instructions"])

    cache_fake.reply_text("first", when=solo)
    first = await run_to_completion(api, workflow["id"], "First question.")
    cache_fake.reply_text("second", when=solo)
    second = await run_to_completion(api, workflow["id"], "Another question entirely.")

    assert first["tokens_in_cached"] == 0
    assert first["tokens_in_cache_write"] == first["tokens_in"]
    # The new input is written; tools and instructions come from the first run's entry.
    assert second["tokens_in_cached"] == system_words
    assert second["tokens_in_cache_write"] == second["tokens_in"] - system_words


async def test_without_instructions_the_last_tool_carries_the_first_breakpoint(
    api: httpx.AsyncClient, worker: Any, cache_fake: FakeAnthropic, tools: ToolServer
) -> None:
    tag = unique_tag()

    def mine(body: dict[str, Any]) -> bool:
        return f"[{tag}]" in json.dumps(body.get("tools", []))

    cache_fake.reply_tool_use("lookup", {"topic": "flags"}, when=mine)
    cache_fake.reply_text("done", when=mine)
    workflow = await create_workflow(
        api,
        [{"role": "bare", "model": MODEL, "tools": ["http_request", "lookup"]}],
        tools=[lookup_tool(tools, tag)],
    )

    await run_to_completion(api, workflow["id"], "Look it up.")

    first, second = cache_fake.requests_matching(mine)
    assert first.body is not None and second.body is not None
    assert "system" not in first.body
    assert [tool["name"] for tool in first.body["tools"]] == ["http_request", "lookup"]
    assert sent_breakpoints(first.body) == ["tools[1]", "messages[0].content[0]"]
    assert sent_breakpoints(second.body) == [
        "tools[1]", "messages[0].content[0]", "messages[2].content[0]"
    ]


async def test_caching_off_sends_no_breakpoints_and_the_same_tokens_in(
    api: httpx.AsyncClient, temporal: Client, settings: Settings,
    cache_fake: FakeAnthropic, tools: ToolServer,
) -> None:
    tag = unique_tag()
    researcher = for_role(tag, "researcher")
    workflow = await create_workflow(api, [agent("researcher", tag, tools=["lookup"])],
                                     tools=[lookup_tool(tools, tag)])

    async def one_run(prompt_cache: bool) -> tuple[dict[str, Any], list[RecordedRequest]]:
        seen = len(cache_fake.requests_matching(researcher))
        script_tool_loop(cache_fake, 4, researcher)
        async with build_worker(temporal, replace(settings, prompt_cache=prompt_cache)):
            run = await run_to_completion(api, workflow["id"], "Research feature flags.")
        return run, cache_fake.requests_matching(researcher)[seen:]

    off, off_calls = await one_run(False)
    on, on_calls = await one_run(True)

    assert len(off_calls) == len(on_calls) == 5
    for call in off_calls:
        assert b"cache_control" not in call.raw_body
        assert isinstance(call.body and call.body["system"], str)
    assert (off["tokens_in_cached"], off["tokens_in_cache_write"]) == (0, 0)
    assert all(counters(s) == expected_counters(off_calls) for s in off["steps"])
    # The same prompts read the same number of tokens; caching changes only the bill.
    assert on["tokens_in"] == off["tokens_in"] > 0
    assert on["tokens_in_cached"] > 0
    assert sum(map(billed, on_calls)) < 0.6 * sum(map(billed, off_calls))


async def test_the_offline_model_reports_no_cache_use(
    api: httpx.AsyncClient, worker: Any
) -> None:
    workflow = await create_workflow(
        api, [{"role": "writer", "model": "loopllama-offline", "instructions": "Write."}]
    )
    run = await run_to_completion(api, workflow["id"], "Draft the brief.")
    assert run["tokens_in"] > 0
    for obj in (run, *run["steps"]):
        assert (obj["tokens_in_cached"], obj["tokens_in_cache_write"]) == (0, 0)


# ---------------------------------------------------------------------- the request


def tool_round(round_no: int, calls: int) -> list[dict[str, Any]]:
    """One round of a tool loop: an answer with `calls` tool uses, then their results."""
    ids = [f"toolu_{round_no}_{i}" for i in range(calls)]
    return [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": id_, "name": "lookup", "input": {"topic": id_}}
            for id_ in ids
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id_, "content": DOCUMENT} for id_ in ids
        ]},
    ]


TOOLS = [{"name": "lookup", "description": "Look a topic up.", "input_schema": LOOKUP_SCHEMA}]


@pytest.mark.parametrize("system", ["", "Be brief."])
@pytest.mark.parametrize("tools", [[], TOOLS])
@pytest.mark.parametrize("rounds", [0, 1, 2, 5])
def test_never_more_than_four_breakpoints_and_inputs_untouched(
    system: str, tools: list[dict[str, Any]], rounds: int
) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Go."}]
    for i in range(rounds):
        messages += tool_round(i, 3)
    before = json.dumps([system, tools, messages])

    request = ModelRequest(model=MODEL, system=system, messages=messages, tools=tools)
    sent = messages_kwargs(request, prompt_cache=True)

    assert json.dumps([system, tools, messages]) == before
    where = sent_breakpoints(sent)
    assert len(where) <= MAX_BREAKPOINTS
    first = ["system[0]"] if system else ["tools[0]"] if tools else []
    if not tools:
        assert where == first
        assert sent["messages"] == messages
        return
    latest = len(messages) - 1
    last_block = len(messages[latest]["content"]) - 1 if rounds else 0
    previous = [f"messages[{latest - 2}].content[{last_block if rounds > 1 else 0}]"]
    assert where == first + (previous if rounds else []) + [
        f"messages[{latest}].content[{last_block}]"
    ]
    assert messages_kwargs(request, prompt_cache=False) == {
        "model": MODEL, "max_tokens": request.max_tokens, "messages": messages,
        **({"system": system} if system else {}), **({"tools": tools} if tools else {}),
    }


def test_a_round_of_many_parallel_calls_still_reads_the_previous_round() -> None:
    """25 tool calls add 26 blocks: more than the API looks back from a breakpoint."""
    system, messages = RULES, [{"role": "user", "content": "Research everything."}]
    with FakeAnthropic(cache=PromptCache()) as fake, anthropic.Anthropic(
        base_url=fake.url, api_key="test-key", max_retries=0
    ) as client:
        for round_no in range(3):
            request = ModelRequest(model=MODEL, system=system, messages=messages, tools=TOOLS)
            fake.enqueue(tool_use_reply("lookup", {"topic": "x"}))
            client.messages.create(**messages_kwargs(request, prompt_cache=True))
            messages = messages + tool_round(round_no, 25)
        calls = fake.requests
    for earlier, later in zip(calls, calls[1:], strict=False):
        assert usage(later)["cache_read_input_tokens"] == count_input_tokens(earlier.body or {})


def test_cache_control_uses_a_copy_of_the_message() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Go."}]
    system, tools, sent = cache_breakpoints("", TOOLS, messages)
    assert system == []
    assert tools[0]["cache_control"] == {"type": "ephemeral"} and "cache_control" not in TOOLS[0]
    assert sent == [{"role": "user", "content": [
        {"type": "text", "text": "Go.", "cache_control": {"type": "ephemeral"}}
    ]}]
    assert messages == [{"role": "user", "content": "Go."}]


# ------------------------------------------------------------------ settings and fake


@pytest.mark.parametrize(("raw", "expected"), [
    (None, True), ("", True), ("on", True), ("TRUE", True), ("1", True),
    ("off", False), ("False", False), ("0", False), (" off ", False),
])
def test_prompt_cache_setting(raw: str | None, expected: bool) -> None:
    env = {} if raw is None else {"LOOPLLAMA_PROMPT_CACHE": raw}
    assert Settings.from_env(env).prompt_cache is expected


def test_prompt_cache_setting_refuses_unknown_values() -> None:
    with pytest.raises(SettingsError, match="LOOPLLAMA_PROMPT_CACHE must be on or off"):
        Settings.from_env({"LOOPLLAMA_PROMPT_CACHE": "sometimes"})


def test_fake_cache_follows_the_api_rules() -> None:
    now = [0.0]
    cache = PromptCache(min_tokens=10, clock=lambda: now[0])
    long_text = " ".join(["w"] * 12)

    def ask(text: str, *, model: str = MODEL, **control: Any) -> dict[str, Any]:
        block = {"type": "text", "text": text, "cache_control": {"type": "ephemeral", **control}}
        request = {"model": model, "messages": [{"role": "user", "content": [block]}]}
        return cache.usage(request, count_input_tokens(request))

    short = ask("too short to cache")
    assert (short["cache_creation_input_tokens"], short["cache_read_input_tokens"]) == (0, 0)
    assert ask(long_text)["cache_creation_input_tokens"] == 12
    assert ask(long_text)["cache_read_input_tokens"] == 12
    assert ask(long_text, model="claude-haiku-4-5")["cache_read_input_tokens"] == 0
    now[0] += 301  # the default TTL is five minutes
    assert ask(long_text)["cache_read_input_tokens"] == 0
    one_hour = ask(long_text + " more", ttl="1h")
    assert one_hour["cache_creation"] == {"ephemeral_5m_input_tokens": 0,
                                          "ephemeral_1h_input_tokens": 13}


@pytest.mark.parametrize(("blocks", "message"), [
    ([{"type": "text", "text": f"b{i}", "cache_control": {"type": "ephemeral"}}
      for i in range(5)], "A maximum of 4 blocks with cache_control"),
    ([{"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}],
     "cache_control cannot be set for empty text blocks"),
    ([{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}],
     "Input should be 'ephemeral'"),
])
def test_fake_refuses_what_the_api_refuses(blocks: list[dict[str, Any]], message: str) -> None:
    with FakeAnthropic() as fake, anthropic.Anthropic(
        base_url=fake.url, api_key="test-key", max_retries=0
    ) as client, pytest.raises(anthropic.BadRequestError, match=message):
        messages: list[Any] = [{"role": "user", "content": blocks}]
        client.messages.create(model=MODEL, max_tokens=8, messages=messages)
