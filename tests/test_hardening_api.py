"""Hostile request input answers 400 saying what to send instead, stores nothing, and
never stalls the API for anyone else (issue 20).

Against the real stack: the in-process API on the session's Temporal server, a worker
where a change needs one, and a real uvicorn server for the event-loop check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from api.body_guard import MAX_JSON_CONTAINERS, MAX_JSON_DEPTH
from core.encryption import ENCODING, KEY_ID, key_id
from core.settings import Secret, Settings
from core.tool_schema import (
    MAX_TOOL_SCHEMA_BYTES,
    MAX_TOOL_SCHEMA_DEPTH,
    MAX_TOOL_SCHEMA_MEMBERS,
    MAX_TOOLS_SCHEMA_MEMBERS,
)
from tests.conftest import API_KEY
from tests.helpers import create_workflow, trigger, uvicorn_in_thread, wait_for_status

MODEL = "loopllama-offline"
JSON = {"Content-Type": "application/json"}


def agent(**fields: Any) -> dict[str, Any]:
    return {"role": "agent", "model": MODEL, **fields}


def tool(schema: dict[str, Any], name: str = "lookup") -> dict[str, Any]:
    return {"name": name, "description": "Look something up.",
            "url": "https://tools.example.com/lookup", "input_schema": schema}


def with_tools(*tools: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hardened", "crew": [agent(tools=[t["name"] for t in tools])],
            "tools": list(tools)}


def wide(members: int) -> dict[str, Any]:
    """A schema of exactly `members` members (object entries and array items)."""
    return {"type": "object", "patternProperties": {f"^p{i}$": {} for i in range(members - 2)}}


def deep(levels: int) -> dict[str, Any]:
    """A schema whose objects nest exactly `levels` (odd) levels."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range((levels - 1) // 2):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def nested_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def issue_schema() -> dict[str, Any]:
    """The issue's: 20,000 string properties, about 590 KB."""
    return {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}


async def workflow_ids(api: httpx.AsyncClient) -> set[str]:
    response = await api.get("/v1/workflows")
    assert response.status_code == 200, response.text
    return {workflow["id"] for workflow in response.json()["data"]}


def refused(response: httpx.Response, *phrases: str) -> str:
    """The 400's message, which must contain every phrase."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    for phrase in phrases:
        assert phrase in error["message"], error["message"]
    return str(error["message"])


# ------------------------------------------------------------ create: nothing stored


CREATE_REFUSALS: list[tuple[str, Any, tuple[str, ...]]] = [
    # Refused before it is parsed: it has more objects than any body needs.
    ("the issue's 20,000-property tool schema", with_tools(tool(issue_schema())),
     (f"more than {MAX_JSON_CONTAINERS} objects and arrays", "8,000 schema members")),
    ("a tool schema one member past the limit", with_tools(tool(wide(MAX_TOOL_SCHEMA_MEMBERS + 1))),
     (f"more than {MAX_TOOL_SCHEMA_MEMBERS} members", "split the tool")),
    ("a tool schema of 6,000 properties",
     with_tools(tool({"type": "object", "properties": {f"p{i}": {} for i in range(6000)}})),
     (f"more than {MAX_TOOL_SCHEMA_MEMBERS} members", "split the tool")),
    ("tools past the workflow's total",
     with_tools(*(tool(wide(MAX_TOOL_SCHEMA_MEMBERS), f"t{i}")
                  for i in range(MAX_TOOLS_SCHEMA_MEMBERS // MAX_TOOL_SCHEMA_MEMBERS + 1))),
     (f"more than {MAX_TOOLS_SCHEMA_MEMBERS} members", "fewer tools")),
    ("a tool schema past the byte limit",
     with_tools(tool({"type": "object", "description": "x" * MAX_TOOL_SCHEMA_BYTES})),
     (f"send at most {MAX_TOOL_SCHEMA_BYTES}",)),
    ("a tool schema two levels past the depth limit",
     with_tools(tool(deep(MAX_TOOL_SCHEMA_DEPTH + 2))),
     (f"more than {MAX_TOOL_SCHEMA_DEPTH} levels", "flatter schema")),
    ("a tool schema nested 117 properties deep", with_tools(tool(deep(2 * 117 + 1))),
     (f"more than {MAX_JSON_DEPTH} levels", "flatter body")),
    ("a default 500 levels deep",
     with_tools(tool({"type": "object", "default": nested_list(500)})),
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ("a const 500 levels deep",
     with_tools(tool({"type": "object", "const": nested_list(500)})),
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ("a body one level past the limit",
     {"name": nested_list(MAX_JSON_DEPTH), "crew": [agent()]},
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ('"max_tokens": true', {"name": "x", "crew": [agent(max_tokens=True)]},
     ("crew.0.max_tokens: send an integer", "not true")),
    ('"max_tokens": "10"', {"name": "x", "crew": [agent(max_tokens="10")]},
     ("crew.0.max_tokens: send an integer", "not '10'")),
    ('"max_tool_rounds": 2.0', {"name": "x", "crew": [agent(max_tool_rounds=2.0)]},
     ("crew.0.max_tool_rounds: send an integer",)),
    ('"allow_input_requests": "yes"',
     {"name": "x", "crew": [agent()], "human_in_the_loop": {"allow_input_requests": "yes"}},
     ("human_in_the_loop.allow_input_requests: send true or false", "not 'yes'")),
    ('"input_timeout_seconds": "60"',
     {"name": "x", "crew": [agent()], "human_in_the_loop": {"input_timeout_seconds": "60"}},
     ("human_in_the_loop.input_timeout_seconds: send an integer", "not '60'")),
    ('"max_parallel": true', {"name": "x", "crew": [agent()], "max_parallel": True},
     ("max_parallel: send an integer",)),
    ('"name": 5', {"name": 5, "crew": [agent()]}, ("name: send a string",)),
]


@pytest.mark.parametrize(("body", "phrases"), [case[1:] for case in CREATE_REFUSALS],
                         ids=[case[0] for case in CREATE_REFUSALS])
async def test_a_create_past_a_limit_or_of_the_wrong_type_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, body: Any, phrases: tuple[str, ...]
) -> None:
    before = await workflow_ids(api)
    refused(await api.post("/v1/workflows", json=body), *phrases)
    assert await workflow_ids(api) == before


RAW_REFUSALS: list[tuple[str, bytes, dict[str, str], tuple[str, ...]]] = [
    ("no Content-Type", json.dumps({"name": "x", "crew": [agent()]}).encode(), {},
     ("Content-Type: application/json",)),
    ("text/plain", json.dumps({"name": "x", "crew": [agent()]}).encode(),
     {"Content-Type": "text/plain"}, ("Content-Type: application/json",)),
    ("1 MiB of '['", b"[" * (1024 * 1024 - 1), JSON,
     (f"more than {MAX_JSON_CONTAINERS} objects and arrays",)),
    ("a body nested 900 levels", b'{"name": ' + b"[" * 900 + b"]" * 900 + b"}", JSON,
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ("21,000 empty objects", b'{"name": [' + b",".join([b"{}"] * 21_000) + b"]}", JSON,
     (f"more than {MAX_JSON_CONTAINERS} objects and arrays",)),
    ("NaN", b'{"name": "x", "crew": [{"role": "a", "model": "loopllama-offline"}], "tools": '
            b'[{"name": "t", "description": "d", "url": "https://tools.example.com/t", '
            b'"input_schema": {"type": "object", "default": NaN}}]}', JSON,
     ("NaN, which is not JSON",)),
    ("1e999", b'{"name": "x", "crew": [{"role": "a", "model": "loopllama-offline", '
              b'"max_tokens": 1e999}]}', JSON, ("too large for a 64-bit float",)),
    ("an integer of 5,000 digits", b'{"name": "x", "crew": [{"role": "a", "model": '
                                   b'"loopllama-offline", "max_tokens": 1' + b"0" * 5000 + b"}]}",
     JSON, ("integer too long", "4,300 digits")),
    ("not UTF-8", b'{"name": "\xff", "crew": []}', JSON, ("not UTF-8",)),
    ("not JSON", b'{"name": ', JSON, ("not valid JSON",)),
    ("a list", b"[]", JSON, ("must be a JSON object",)),
]


@pytest.mark.parametrize(("body", "headers", "phrases"), [case[1:] for case in RAW_REFUSALS],
                         ids=[case[0] for case in RAW_REFUSALS])
async def test_a_create_body_that_is_not_usable_json_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, body: bytes, headers: dict[str, str], phrases: tuple[str, ...]
) -> None:
    before = await workflow_ids(api)
    refused(await api.post("/v1/workflows", content=body, headers=headers), *phrases)
    assert await workflow_ids(api) == before


async def test_a_workflow_at_every_limit_is_accepted_and_changed_by_the_worker(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    # The whole workflow total in tools at the per-tool limit, one of them also as deep as
    # allowed: accepted, and a change to it is checked again, within time, by the worker.
    count = MAX_TOOLS_SCHEMA_MEMBERS // MAX_TOOL_SCHEMA_MEMBERS
    tools = [tool(wide(MAX_TOOL_SCHEMA_MEMBERS), f"t{i}") for i in range(count - 1)]
    tools.append(tool({**deep(MAX_TOOL_SCHEMA_DEPTH - 1), **wide(MAX_TOOL_SCHEMA_MEMBERS - 45)},
                      f"t{count - 1}"))
    created = await create_workflow(api, [agent(tools=[t["name"] for t in tools])],
                                    tools=tools)
    changed = await api.patch(f"/v1/workflows/{created['id']}", json={"name": "renamed"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["data"]["tools"] == tools


async def test_brackets_inside_strings_are_not_objects(api: httpx.AsyncClient) -> None:
    # Instructions full of JSON examples: more brackets than the body may hold objects.
    example = '{"items": [{"id": 1}, {"id": 2}], "escaped": "\\"{["}\n'
    instructions = (example * 1000)[:32_000]
    crew = [agent(role=f"r{i}", instructions=instructions) for i in range(8)]
    assert sum(a["instructions"].count("{") + a["instructions"].count("[") for a in crew) > (
        MAX_JSON_CONTAINERS)
    created = await create_workflow(api, crew)
    assert created["crew"][0]["instructions"] == instructions


# ------------------------------------------------------------- PATCH: nothing changed


PATCH_REFUSALS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("a tool schema nested 117 properties deep", {"tools": [tool(deep(2 * 117 + 1))]},
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ("a default 500 levels deep",
     {"tools": [tool({"type": "object", "default": nested_list(500)})]},
     (f"more than {MAX_JSON_DEPTH} levels",)),
    ("the issue's 20,000-property tool schema", {"tools": [tool(issue_schema())]},
     (f"more than {MAX_JSON_CONTAINERS} objects and arrays",)),
    ("a tool schema one member past the limit",
     {"tools": [tool(wide(MAX_TOOL_SCHEMA_MEMBERS + 1))]},
     (f"more than {MAX_TOOL_SCHEMA_MEMBERS} members",)),
    ('"max_parallel": true', {"max_parallel": True}, ("max_parallel: send an integer",)),
    ('"allow_input_requests": "yes"', {"human_in_the_loop": {"allow_input_requests": "yes"}},
     ("send true or false",)),
]


@pytest.mark.parametrize(("patch", "phrases"), [case[1:] for case in PATCH_REFUSALS],
                         ids=[case[0] for case in PATCH_REFUSALS])
async def test_a_patch_past_a_limit_or_of_the_wrong_type_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, patch: Any, phrases: tuple[str, ...]
) -> None:
    # Refused before any worker is asked: none runs here.
    created = await create_workflow(api, [agent()])
    refused(await api.patch(f"/v1/workflows/{created['id']}", json=patch), *phrases)
    after = await api.get(f"/v1/workflows/{created['id']}")
    assert after.json()["data"] == created


async def test_a_patch_without_content_type_says_to_send_json(api: httpx.AsyncClient) -> None:
    created = await create_workflow(api, [agent()])
    response = await api.patch(f"/v1/workflows/{created['id']}",
                               content=json.dumps({"name": "renamed"}).encode())
    refused(response, "Content-Type: application/json")
    assert (await api.get(f"/v1/workflows/{created['id']}")).json()["data"] == created


# ------------------------------------------------------------- runs: nothing started


async def test_trigger_and_respond_bodies_are_strict_and_bounded(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    created = await create_workflow(api, [agent()])
    run_id = (await trigger(api, created["id"], "Say hi."))["id"]
    await wait_for_status(api, run_id, "completed")
    runs = f"/v1/workflows/{created['id']}/runs"
    listed = (await api.get(runs)).json()["data"]
    for body, phrase in (
        ({"input": 5}, "input: send a string"),
        ({"input": ["Say hi."]}, "input: send a string"),
        ({"input": nested_list(MAX_JSON_DEPTH)}, f"more than {MAX_JSON_DEPTH} levels"),
    ):
        refused(await api.post(runs, json=body), phrase)
    refused(await api.post(runs, content=b'{"input": "Say hi."}'), "Content-Type")
    assert (await api.get(runs)).json()["data"] == listed
    respond = f"/v1/runs/{run_id}/respond"
    for body, phrase in (
        ({"action": "input", "input": 5}, "input: send a string"),
        ({"action": "approve", "pause_id": 7}, "pause_id: send a string"),
        ({"action": True}, "action"),
    ):
        refused(await api.post(respond, json=body), phrase)
    refused(await api.post(respond, content=b'{"action": "approve"}'), "Content-Type")


@pytest.mark.parametrize("header", [b"9" * 5000, "٣".encode(), "²".encode("latin-1"), b"-1",
                                    b"1" * 19, b"12a"],
                         ids=["5000 digits", "arabic-indic digit", "superscript two",
                              "negative", "19 digits", "not a number"])
async def test_a_last_event_id_that_is_not_an_event_id_is_a_400(
    api: httpx.AsyncClient, worker: Worker, header: bytes
) -> None:
    created = await create_workflow(api, [agent()])
    run_id = (await trigger(api, created["id"], "Say hi."))["id"]
    await wait_for_status(api, run_id, "completed")
    response = await api.get(f"/v1/runs/{run_id}/events", headers=[(b"Last-Event-ID", header)])
    refused(response, "digits 0-9 only", "Leave the header out")
    # The largest id allowed is fine: nothing comes after it, and the run has ended.
    ok = await api.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "9" * 18})
    assert ok.status_code == 200


# ---------------------------------------------------------------------------- codec


async def test_the_codec_answers_400_for_payloads_it_cannot_decrypt(
    settings: Settings, temporal: Client
) -> None:
    key = os.urandom(32)
    keyed = replace(settings, encryption_keys=(Secret(base64.b64encode(key).decode()),))

    def payloads(name: str, data: bytes) -> dict[str, Any]:
        def b64(raw: bytes) -> str:
            return base64.b64encode(raw).decode()

        return {"payloads": [
            {"metadata": {"encoding": b64(b"json/plain")}, "data": b64(b'"clear"')},
            {"metadata": {"encoding": b64(ENCODING), KEY_ID: b64(name.encode())},
             "data": b64(data)}]}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(keyed, temporal)), base_url="http://t",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as api:
        for body, phrases in (
            (payloads(key_id(key), os.urandom(64)), ("payloads.1", "corrupt or cut short")),
            (payloads(key_id(key), b""), ("payloads.1", "corrupt or cut short")),
            (payloads("0" * 16, os.urandom(64)), ("payloads.1", "'0000000000000000'",
                                                  "not among LOOPLLAMA_ENCRYPTION_KEY")),
            (payloads("x" * 5000, b""), ("payloads.1", "not among")),
        ):
            message = refused(await api.post("/codec/decode", json=body), *phrases)
            assert len(message) < 500
        # What this deployment encrypted still decodes.
        clear = {"payloads": payloads("unused", b"")["payloads"][:1]}
        sealed = await api.post("/codec/encode", json=clear)
        assert sealed.status_code == 200
        assert (await api.post("/codec/decode", json=sealed.json())).json() == clear


# -------------------------------------------------------------- the loop stays free


async def test_worst_case_bodies_do_not_stall_other_clients(
    api: httpx.AsyncClient, worker: Worker, settings: Settings
) -> None:
    # Three clients keep sending the worst bodies (the issue's 20,000-property schema,
    # which took 6.4 s to check and stalled /health for 12 s, and an accepted workflow
    # at every limit); meanwhile another client's /health and GET run answer quickly.
    # Timing is the benchmark's (bench/bench_hardening.py); this bound only shows that
    # nothing waits for the checks.
    created = await create_workflow(api, [agent()])
    run_id = (await trigger(api, created["id"], "Say hi."))["id"]
    await wait_for_status(api, run_id, "completed")
    count = MAX_TOOLS_SCHEMA_MEMBERS // MAX_TOOL_SCHEMA_MEMBERS
    at_limits = [tool(wide(MAX_TOOL_SCHEMA_MEMBERS), f"t{i}") for i in range(count)]
    bodies = [json.dumps(with_tools(tool(issue_schema()))).encode(),
              json.dumps(with_tools(*at_limits)).encode()]
    stop = asyncio.Event()
    statuses: list[int] = []
    headers = {"Authorization": f"Bearer {API_KEY}", **JSON}

    async with uvicorn_in_thread(settings) as url:
        async def load(body: bytes) -> None:
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                while not stop.is_set():
                    statuses.append((await http.post("/v1/workflows", content=body)).status_code)

        loaders = [asyncio.create_task(load(bodies[i % 2])) for i in range(3)]
        slowest = {"/health": 0.0, f"/v1/runs/{run_id}": 0.0}
        try:
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as probe:
                # At least 4 s, and until the loaders have had 6 answers (at most 60 s).
                start_at = time.monotonic()
                while (elapsed := time.monotonic() - start_at) < 4 or (
                        len(statuses) < 6 and elapsed < 60):
                    for path in slowest:
                        start = time.perf_counter()
                        assert (await probe.get(path)).status_code == 200
                        slowest[path] = max(slowest[path], time.perf_counter() - start)
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*loaders)
    assert set(statuses) == {400, 201}, statuses
    assert max(slowest.values()) < 1.0, slowest
