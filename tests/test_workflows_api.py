"""`/v1/workflows`: create, read, list, change, pause/resume, delete, and durability.

Every test uses its own names (a uuid marker) because the dev server is shared by the
whole session; list assertions filter to the test's own ids or marker.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from core.settings import Settings
from core.types import MAX_AGENTS
from tests.conftest import API_KEY, eventually
from worker import build_worker

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
WORKFLOW_ID = re.compile(r"^ckva[0-9a-z]{21}$")
WORKFLOW_KEYS = [
    "id",
    "name",
    "description",
    "status",
    "crew",
    "human_in_the_loop",
    "tools",
    "webhooks",
    "max_parallel",
    "mcp_servers",
    "created_at",
    "updated_at",
]
WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
AGENT_KEYS = {"role", "model", "instructions", "tools", "max_tokens", "max_tool_rounds"}
HITL_DEFAULTS = {
    "allow_input_requests": False,
    "approval_required_tools": [],
    "input_timeout_seconds": None,
}
# Well-formed (prefix + 21 base36 chars) but never created, and plain garbage.
UNKNOWN_IDS = ("ckva" + "0" * 21, "ckva" + "z" * 21, "nope")


def marker() -> str:
    """A name no other test uses."""
    return f"wf-{uuid.uuid4().hex[:12]}"


def agent(role: str = "writer", **fields: Any) -> dict[str, Any]:
    """One agent payload."""
    return {"role": role, "model": "claude-sonnet-4-6", **fields}


def spec(name: Any = None, **fields: Any) -> dict[str, Any]:
    """A valid create body; `fields` replace or add top-level keys."""
    body: dict[str, Any] = {"name": marker() if name is None else name, "crew": [agent()]}
    body.update(fields)
    return body


def assert_error(response: httpx.Response, status: int, error_type: str) -> str:
    """The error envelope with `status` and `error_type`; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert "Traceback" not in response.text
    return message


def data(response: httpx.Response, status: int = 200) -> Any:
    """The `data` of a successful response."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"data"}, body
    return body["data"]


def assert_workflow_shape(workflow: dict[str, Any]) -> None:
    """Keys, key order and types of a workflow object."""
    assert list(workflow) == WORKFLOW_KEYS
    assert isinstance(workflow["id"], str) and WORKFLOW_ID.match(workflow["id"])
    assert isinstance(workflow["name"], str)
    assert isinstance(workflow["description"], str)
    assert workflow["status"] in ("active", "paused")
    assert isinstance(workflow["crew"], list) and workflow["crew"]
    for member in workflow["crew"]:
        assert set(member) == AGENT_KEYS
        assert isinstance(member["role"], str)
        assert isinstance(member["model"], str)
        assert isinstance(member["instructions"], str)
        assert isinstance(member["tools"], list)
        assert type(member["max_tokens"]) is int
        assert type(member["max_tool_rounds"]) is int
    assert set(workflow["human_in_the_loop"]) == set(HITL_DEFAULTS)
    for key in ("created_at", "updated_at"):
        assert isinstance(workflow[key], str) and TIMESTAMP.match(workflow[key]), workflow[key]


async def create(api: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a workflow and return it (without the webhook secret shown once on create)."""
    created: dict[str, Any] = data(await api.post("/v1/workflows", json=body or spec()), 201)
    return without_secret(created)


def without_secret(created: dict[str, Any]) -> dict[str, Any]:
    """The workflow object of a create response: its last key is the webhook secret."""
    assert list(created)[-1] == "webhook_secret" and WEBHOOK_SECRET.match(
        created["webhook_secret"]), created
    return {key: value for key, value in created.items() if key != "webhook_secret"}


async def get(api: httpx.AsyncClient, workflow_id: str) -> dict[str, Any]:
    """Retrieve a workflow (must exist)."""
    found: dict[str, Any] = data(await api.get(f"/v1/workflows/{workflow_id}"))
    return found


async def listed(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The whole list."""
    items: list[dict[str, Any]] = data(await api.get("/v1/workflows"))
    assert isinstance(items, list)
    return items


async def listed_ids(api: httpx.AsyncClient) -> list[str]:
    """Ids of the whole list, in list order."""
    return [item["id"] for item in await listed(api)]


async def count_marked(api: httpx.AsyncClient, mark: str) -> int:
    """Listed workflows whose name or description carries `mark`."""
    return sum(
        1 for item in await listed(api) if mark in item["name"] or mark in item["description"]
    )


# --- Create and read ---------------------------------------------------------------


async def test_create_returns_201_with_defaults_and_get_returns_same(
    api: httpx.AsyncClient,
) -> None:
    name = marker()
    response = await api.post(
        "/v1/workflows",
        json={"name": name, "crew": [{"role": "writer", "model": "claude-sonnet-4-6"}]},
    )
    created = without_secret(data(response, 201))
    assert_workflow_shape(created)
    assert created["id"].startswith("ckva")
    assert created["name"] == name
    assert created["description"] == ""
    assert created["status"] == "active"
    assert created["human_in_the_loop"] == HITL_DEFAULTS
    assert created["crew"] == [
        {
            "role": "writer",
            "model": "claude-sonnet-4-6",
            "instructions": "",
            "tools": [],
            "max_tokens": 1024,
            "max_tool_rounds": 10,
        }
    ]
    assert created["created_at"] == created["updated_at"]

    assert await get(api, created["id"]) == created
    assert [w for w in await listed(api) if w["id"] == created["id"]] == [created]


async def test_create_keeps_every_given_field(api: httpx.AsyncClient) -> None:
    body = {
        "name": marker(),
        "description": "Researches then writes.",
        "crew": [
            {
                "role": "researcher",
                "model": "loopllama-offline",
                "instructions": "Find facts.",
                "tools": ["http_request"],
                "max_tokens": 2000,
                "max_tool_rounds": 3,
            },
            {
                "role": "writer",
                "model": "claude-haiku-4-5",
                "instructions": "Write it up.",
                "tools": ["send_email", "http_request"],
                "max_tokens": 1,
                "max_tool_rounds": 100,
            },
        ],
        "human_in_the_loop": {
            "allow_input_requests": True,
            "approval_required_tools": ["send_email"],
            "input_timeout_seconds": 3600,
        },
    }
    created = await create(api, body)
    assert_workflow_shape(created)
    assert {k: created[k] for k in body} == body
    assert await get(api, created["id"]) == created


async def test_boundary_values_are_accepted(api: httpx.AsyncClient) -> None:
    mark = marker()
    cases = [
        spec(name=mark + "n" * (200 - len(mark))),
        spec(name=mark, crew=[agent(f"r{i}") for i in range(20)]),
        spec(name=mark, crew=[agent("r" * 64)]),
        spec(name=mark, crew=[agent(instructions="i" * 32_000)]),
        spec(name=mark, crew=[agent(max_tokens=64_000, max_tool_rounds=1)]),
        # The largest crew: 20 agents with 32,000-character instructions each.
        spec(name=mark, crew=[agent(f"r{i}", instructions="i" * 32_000) for i in range(20)]),
    ]
    for body in cases:
        created = await create(api, body)
        assert_workflow_shape(created)
        assert created["name"] == body["name"]
        assert len(created["crew"]) == len(body["crew"])
        assert created["crew"][0]["role"] == body["crew"][0]["role"]
        assert created["crew"][0]["instructions"] == body["crew"][0].get("instructions", "")
    assert await count_marked(api, mark) == len(cases)


async def test_list_is_newest_first(api: httpx.AsyncClient) -> None:
    ids = [(await create(api))["id"] for _ in range(3)]
    mine = [i for i in await listed_ids(api) if i in ids]
    assert mine == list(reversed(ids))
    items = [w for w in await listed(api) if w["id"] in ids]
    for item in items:
        assert_workflow_shape(item)
    stamps = [w["created_at"] for w in items]
    assert stamps == sorted(stamps, reverse=True)


# --- Validation --------------------------------------------------------------------


def _too_many_agents() -> list[dict[str, Any]]:
    return [agent(f"r{i}") for i in range(MAX_AGENTS + 1)]


# (case id, body given a marker, substrings the message must contain)
INVALID_CREATES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("name-empty", lambda m: spec(name="", description=m), ("name",)),
    ("name-201", lambda m: spec(name=m + "n" * (201 - len(m))), ("name", "200")),
    ("name-missing", lambda m: {"description": m, "crew": [agent()]}, ("name",)),
    ("name-not-string", lambda m: spec(name=123, description=m), ("name",)),
    ("crew-empty", lambda m: spec(name=m, crew=[]), ("crew",)),
    ("crew-missing", lambda m: {"name": m}, ("crew",)),
    (f"crew-{MAX_AGENTS + 1}", lambda m: spec(name=m, crew=_too_many_agents()),
     ("crew", str(MAX_AGENTS))),
    ("crew-string", lambda m: spec(name=m, crew="writer"), ("crew",)),
    ("crew-item-string", lambda m: spec(name=m, crew=["writer"]), ("crew",)),
    (
        "duplicate-roles",
        lambda m: spec(name=m, crew=[agent("writer"), agent("editor"), agent("writer")]),
        ("unique", "writer"),
    ),
    ("role-empty", lambda m: spec(name=m, crew=[agent("")]), ("role",)),
    ("role-65", lambda m: spec(name=m, crew=[agent("r" * 65)]), ("role", "64")),
    ("role-missing", lambda m: spec(name=m, crew=[{"model": "loopllama-offline"}]), ("role",)),
    ("model-missing", lambda m: spec(name=m, crew=[{"role": "writer"}]), ("model",)),
    (
        "model-unknown",
        lambda m: spec(name=m, crew=[agent(model="gpt-4o")]),
        ("model", "gpt-4o"),
    ),
    (
        "model-unknown-case",
        lambda m: spec(name=m, crew=[agent(model="Claude-Sonnet-4-6")]),
        ("model", "Claude-Sonnet-4-6"),
    ),
    (
        "tool-unknown",
        lambda m: spec(name=m, crew=[agent(tools=["send_email", "rm_rf"])]),
        ("tool", "rm_rf"),
    ),
    (
        "tool-repeated",
        lambda m: spec(name=m, crew=[agent(tools=["send_email", "send_email"])]),
        ("tools",),
    ),
    (
        "instructions-32001",
        lambda m: spec(name=m, crew=[agent(instructions="i" * 32_001)]),
        ("instructions", "32000"),
    ),
    (
        "approval-tool-no-agent-has",
        lambda m: spec(
            name=m,
            crew=[agent(tools=["http_request"])],
            human_in_the_loop={"approval_required_tools": ["send_email"]},
        ),
        ("approval_required_tools", "send_email"),
    ),
    (
        "approval-tool-unknown",
        lambda m: spec(name=m, human_in_the_loop={"approval_required_tools": ["launch"]}),
        ("approval_required_tools", "launch"),
    ),
    ("unknown-field", lambda m: spec(name=m, colour="blue"), ("colour",)),
    (
        "unknown-agent-field",
        lambda m: spec(name=m, crew=[agent(temperature=0.2)]),
        ("temperature",),
    ),
    (
        "unknown-hitl-field",
        lambda m: spec(name=m, human_in_the_loop={"approve_everything": True}),
        ("approve_everything",),
    ),
    ("max-tokens-0", lambda m: spec(name=m, crew=[agent(max_tokens=0)]), ("max_tokens",)),
    ("max-tokens-string", lambda m: spec(name=m, crew=[agent(max_tokens="lots")]), ("max_tokens",)),
    (
        "max-tool-rounds-0",
        lambda m: spec(name=m, crew=[agent(max_tool_rounds=0)]),
        ("max_tool_rounds",),
    ),
    (
        "input-timeout-0",
        lambda m: spec(name=m, human_in_the_loop={"input_timeout_seconds": 0}),
        ("input_timeout_seconds",),
    ),
    ("description-2001", lambda m: spec(name=m, description="d" * 2001), ("description",)),
    ("hitl-string", lambda m: spec(name=m, human_in_the_loop="yes"), ("human_in_the_loop",)),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [pytest.param(build, expected, id=case) for case, build, expected in INVALID_CREATES],
)
async def test_invalid_create_is_400_naming_the_problem_and_creates_nothing(
    api: httpx.AsyncClient, build: Any, expected: tuple[str, ...]
) -> None:
    mark = marker()
    response = await api.post("/v1/workflows", json=build(mark))
    message = assert_error(response, 400, "invalid_request_error")
    for part in expected:
        assert part in message, (part, message)
    assert await count_marked(api, mark) == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"[]", "object", id="array"),
        pytest.param(b'[{"name": "x"}]', "object", id="array-of-object"),
        pytest.param(b'"workflow"', "object", id="string"),
        pytest.param(b"42", "object", id="number"),
        pytest.param(b"null", "object", id="null"),
        pytest.param(b"{not json", "JSON", id="not-json"),
        pytest.param(b"", "body", id="empty"),
    ],
)
async def test_body_that_is_not_an_object_is_400(
    api: httpx.AsyncClient, content: bytes, expected: str
) -> None:
    before = len(await listed(api))
    response = await api.post(
        "/v1/workflows", content=content, headers={"Content-Type": "application/json"}
    )
    message = assert_error(response, 400, "invalid_request_error")
    assert expected in message
    assert len(await listed(api)) == before


# --- Change ------------------------------------------------------------------------


async def test_patch_changes_only_the_given_fields(api: httpx.AsyncClient, worker: Worker) -> None:
    body = spec(
        description="first",
        crew=[agent("writer", tools=["send_email"])],
        human_in_the_loop={"approval_required_tools": ["send_email"]},
    )
    created = await create(api, body)
    assert await get(api, created["id"]) == created

    renamed = data(await api.patch(f"/v1/workflows/{created['id']}", json={"name": "renamed"}))
    assert_workflow_shape(renamed)
    assert renamed["name"] == "renamed"
    unchanged = ("id", "description", "status", "crew", "human_in_the_loop", "created_at")
    assert {k: renamed[k] for k in unchanged} == {k: created[k] for k in unchanged}
    assert renamed["updated_at"] >= renamed["created_at"]
    assert renamed["updated_at"] > created["updated_at"]
    assert await get(api, created["id"]) == renamed

    new_crew = [
        agent("writer", tools=["send_email"], instructions="Write."),
        agent("editor", model="loopllama-offline", max_tokens=10),
    ]
    recrewed = data(await api.patch(f"/v1/workflows/{created['id']}", json={"crew": new_crew}))
    assert recrewed["name"] == "renamed"
    assert recrewed["description"] == "first"
    assert recrewed["human_in_the_loop"] == created["human_in_the_loop"]
    assert [m["role"] for m in recrewed["crew"]] == ["writer", "editor"]
    assert recrewed["crew"][0]["instructions"] == "Write."
    assert recrewed["crew"][1] == {
        "role": "editor",
        "model": "loopllama-offline",
        "instructions": "",
        "tools": [],
        "max_tokens": 10,
        "max_tool_rounds": 10,
    }
    assert recrewed["created_at"] == created["created_at"]
    assert recrewed["updated_at"] >= renamed["updated_at"]

    several = data(
        await api.patch(
            f"/v1/workflows/{created['id']}",
            json={"description": "", "human_in_the_loop": {"allow_input_requests": True}},
        )
    )
    assert several["description"] == ""
    assert several["human_in_the_loop"] == {**HITL_DEFAULTS, "allow_input_requests": True}
    assert several["crew"] == recrewed["crew"]
    assert several["name"] == "renamed"
    assert several["updated_at"] >= recrewed["updated_at"]
    assert await get(api, created["id"]) == several
    assert [w for w in await listed(api) if w["id"] == created["id"]] == [several]


async def test_patch_with_invalid_merged_result_is_400_and_changes_nothing(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    created = await create(
        api,
        spec(
            crew=[agent("writer", tools=["send_email"]), agent("editor")],
            human_in_the_loop={"approval_required_tools": ["send_email"]},
        ),
    )
    url = f"/v1/workflows/{created['id']}"
    # The crew change drops the only agent that has send_email.
    response = await api.patch(url, json={"crew": [agent("editor")], "name": "should-not-stick"})
    message = assert_error(response, 400, "invalid_request_error")
    assert "approval_required_tools" in message and "send_email" in message, message
    assert await get(api, created["id"]) == created

    # The same rule from the other side: approval for a tool nobody has.
    response = await api.patch(
        url, json={"human_in_the_loop": {"approval_required_tools": ["http_request"]}}
    )
    message = assert_error(response, 400, "invalid_request_error")
    assert "http_request" in message, message
    assert await get(api, created["id"]) == created

    # A crew whose roles repeat is only caught on the whole spec too.
    response = await api.patch(url, json={"crew": [agent("a"), agent("a")]})
    message = assert_error(response, 400, "invalid_request_error")
    assert "unique" in message, message
    assert await get(api, created["id"]) == created


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        pytest.param({}, "at least one", id="empty"),
        pytest.param({"name": None}, "name", id="name-null"),
        pytest.param({"crew": None}, "crew", id="crew-null"),
        pytest.param({"description": None}, "description", id="description-null"),
        pytest.param({"human_in_the_loop": None}, "human_in_the_loop", id="hitl-null"),
        pytest.param({"name": ""}, "name", id="name-empty"),
        pytest.param({"name": "n" * 201}, "name", id="name-201"),
        pytest.param({"crew": []}, "crew", id="crew-empty"),
        pytest.param({"crew": "writer"}, "crew", id="crew-string"),
        pytest.param({"crew": [agent(model="gpt-4o")]}, "gpt-4o", id="model-unknown"),
        pytest.param({"crew": [agent(tools=["rm_rf"])]}, "rm_rf", id="tool-unknown"),
        pytest.param({"crew": [agent(max_tokens=0)]}, "max_tokens", id="max-tokens-0"),
        pytest.param({"status": "paused"}, "status", id="status-not-patchable"),
        pytest.param({"id": "ckva" + "0" * 21}, "id", id="id-not-patchable"),
        pytest.param({"nickname": "x"}, "nickname", id="unknown-field"),
        pytest.param({"crew": [agent(colour="blue")]}, "colour", id="unknown-agent-field"),
        pytest.param([], "object", id="not-an-object"),
    ],
)
async def test_invalid_patch_is_400_and_changes_nothing(
    api: httpx.AsyncClient, worker: Worker, patch: Any, expected: str
) -> None:
    created = await create(api)
    response = await api.patch(f"/v1/workflows/{created['id']}", json=patch)
    message = assert_error(response, 400, "invalid_request_error")
    assert expected in message, message
    assert await get(api, created["id"]) == created


async def test_patch_keeps_paused_status(api: httpx.AsyncClient, worker: Worker) -> None:
    created = await create(api)
    url = f"/v1/workflows/{created['id']}"
    assert data(await api.post(f"{url}/pause"))["status"] == "paused"
    patched = data(await api.patch(url, json={"description": "still paused"}))
    assert patched["status"] == "paused"
    assert patched["description"] == "still paused"
    assert await get(api, created["id"]) == patched


# --- Pause and resume --------------------------------------------------------------


async def test_pause_and_resume_are_idempotent(api: httpx.AsyncClient, worker: Worker) -> None:
    created = await create(api)
    url = f"/v1/workflows/{created['id']}"

    # Resuming an active workflow is a no-op.
    resumed_first = data(await api.post(f"{url}/resume"))
    assert resumed_first == created

    paused = data(await api.post(f"{url}/pause"))
    assert_workflow_shape(paused)
    assert paused["status"] == "paused"
    assert paused["updated_at"] > created["updated_at"]
    same = ("id", "name", "description", "crew", "human_in_the_loop", "created_at")
    assert {k: paused[k] for k in same} == {k: created[k] for k in same}
    assert await get(api, created["id"]) == paused

    again = data(await api.post(f"{url}/pause"))
    assert again == paused

    resumed = data(await api.post(f"{url}/resume"))
    assert resumed["status"] == "active"
    assert resumed["updated_at"] >= paused["updated_at"]
    assert {k: resumed[k] for k in same} == {k: created[k] for k in same}
    assert await get(api, created["id"]) == resumed

    assert data(await api.post(f"{url}/resume")) == resumed
    assert [w for w in await listed(api) if w["id"] == created["id"]] == [resumed]


async def test_pause_and_resume_ignore_a_body(api: httpx.AsyncClient, worker: Worker) -> None:
    created = await create(api)
    paused = data(await api.post(f"/v1/workflows/{created['id']}/pause", json={}))
    assert paused["status"] == "paused"


# --- Delete ------------------------------------------------------------------------


async def test_delete_then_everything_is_404(api: httpx.AsyncClient, worker: Worker) -> None:
    keep = await create(api)
    created = await create(api)
    wid = created["id"]
    url = f"/v1/workflows/{wid}"

    assert data(await api.delete(url)) == {"id": wid, "deleted": True}

    assert_error(await api.get(url), 404, "not_found_error")
    assert_error(await api.patch(url, json={"name": "x"}), 404, "not_found_error")
    assert_error(await api.post(f"{url}/pause"), 404, "not_found_error")
    assert_error(await api.post(f"{url}/resume"), 404, "not_found_error")
    assert_error(await api.delete(url), 404, "not_found_error")
    ids = await listed_ids(api)
    assert wid not in ids
    assert keep["id"] in ids
    assert await get(api, keep["id"]) == keep


async def test_delete_a_paused_workflow(api: httpx.AsyncClient, worker: Worker) -> None:
    created = await create(api)
    url = f"/v1/workflows/{created['id']}"
    data(await api.post(f"{url}/pause"))
    assert data(await api.delete(url)) == {"id": created["id"], "deleted": True}
    assert_error(await api.get(url), 404, "not_found_error")


# --- Unknown ids and auth ----------------------------------------------------------


def every_endpoint(workflow_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, json body) for every endpoint that takes an id."""
    url = f"/v1/workflows/{workflow_id}"
    return [
        ("GET", url, None),
        ("PATCH", url, {"name": "x"}),
        ("DELETE", url, None),
        ("POST", f"{url}/pause", None),
        ("POST", f"{url}/resume", None),
    ]


@pytest.mark.parametrize("workflow_id", UNKNOWN_IDS)
async def test_unknown_id_is_404_on_every_endpoint(
    api: httpx.AsyncClient, workflow_id: str
) -> None:
    for method, path, body in every_endpoint(workflow_id):
        response = await api.request(method, path, json=body)
        message = assert_error(response, 404, "not_found_error")
        assert workflow_id in message, (method, path, message)


async def test_id_of_another_kind_is_404(api: httpx.AsyncClient) -> None:
    created = await create(api)
    wid = created["id"]
    for odd in (wid.upper(), wid + "0", wid[:-1], " " + wid):
        for method, path, body in every_endpoint(odd):
            response = await api.request(method, path, json=body)
            assert_error(response, 404, "not_found_error")
    assert await get(api, created["id"]) == created


async def test_every_endpoint_needs_a_key(
    api: httpx.AsyncClient, anon_api: httpx.AsyncClient
) -> None:
    created = await create(api)
    calls = [
        ("POST", "/v1/workflows", spec()),
        ("GET", "/v1/workflows", None),
        *every_endpoint(created["id"]),
        *every_endpoint(UNKNOWN_IDS[0]),
    ]
    for method, path, body in calls:
        for headers in ({}, {"Authorization": "Bearer wrong-key"}):
            response = await anon_api.request(method, path, json=body, headers=headers)
            message = assert_error(response, 401, "authentication_error")
            assert "key" in message.lower()
            assert response.headers.get("www-authenticate") == "Bearer"
    # Nothing changed and nothing was created by the refused calls.
    assert await get(api, created["id"]) == created


async def test_invalid_create_without_key_is_401_not_400(anon_api: httpx.AsyncClient) -> None:
    response = await anon_api.post("/v1/workflows", json={"bogus": True})
    assert_error(response, 401, "authentication_error")


# --- Durability ----------------------------------------------------------------------


async def test_definition_survives_a_worker_restart(
    api: httpx.AsyncClient, temporal: Client, settings: Settings
) -> None:
    created = await create(api)
    url = f"/v1/workflows/{created['id']}"
    async with build_worker(temporal, settings):
        first = data(await api.patch(url, json={"description": "by the first worker"}))
    assert first["description"] == "by the first worker"
    assert await get(api, created["id"]) == first

    async with build_worker(temporal, settings):
        second = data(await api.patch(url, json={"name": "by-the-second-worker"}))
        assert second["description"] == "by the first worker"
        assert second["name"] == "by-the-second-worker"
        assert second["created_at"] == created["created_at"]
        paused = data(await api.post(f"{url}/pause"))
        assert paused["status"] == "paused"
        assert paused["name"] == "by-the-second-worker"
    assert await get(api, created["id"]) == paused


async def test_definition_survives_a_new_api_instance(
    api: httpx.AsyncClient, temporal: Client, settings: Settings, worker: Worker
) -> None:
    created = await create(api)
    patched = data(await api.patch(f"/v1/workflows/{created['id']}", json={"description": "x"}))

    # A second app sharing the client.
    shared = create_app(settings, temporal)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=shared),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as other:
        assert await get(other, created["id"]) == patched
        assert created["id"] in await listed_ids(other)

    # A brand-new app with its own Temporal connection, started through its lifespan.
    fresh = create_app(settings)
    async with (
        fresh.router.lifespan_context(fresh),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fresh),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as other,
    ):

        async def readable() -> bool:
            response = await other.get(f"/v1/workflows/{created['id']}")
            return response.status_code == 200

        await eventually(readable, within=15)
        assert await get(other, created["id"]) == patched
        assert created["id"] in await listed_ids(other)
        renamed = data(
            await other.patch(f"/v1/workflows/{created['id']}", json={"name": "via-new-app"})
        )
        assert renamed["name"] == "via-new-app"
    assert await get(api, created["id"]) == renamed


async def test_definition_survives_continue_as_new(
    api: httpx.AsyncClient, temporal: Client, worker: Worker
) -> None:
    created = await create(api)
    url = f"/v1/workflows/{created['id']}"
    handle = temporal.get_workflow_handle(created["id"])
    first_run = (await handle.describe()).run_id
    last: dict[str, Any] = created
    count = 0
    # Each change adds a few history events; the entity continues as new well before
    # Temporal's limits. Changes race the rollover on purpose (several at once).
    for _ in range(150):
        batch = [api.patch(url, json={"description": f"change {count + i}"}) for i in range(8)]
        for response in await asyncio.gather(*batch):
            last = data(response)
        count += len(batch)
        if (await handle.describe()).run_id != first_run:
            break
    assert (await handle.describe()).run_id != first_run, "never continued as new"

    found = await get(api, created["id"])
    assert found["created_at"] == created["created_at"]
    assert found["name"] == created["name"]
    assert found["description"].startswith("change ")
    assert found["updated_at"] >= last["updated_at"] >= created["updated_at"]
    assert created["id"] in await listed_ids(api)
    renamed = data(await api.patch(url, json={"name": "after-rollover"}))
    assert renamed["name"] == "after-rollover"
    assert renamed["description"] == found["description"]
    assert data(await api.post(f"{url}/pause"))["status"] == "paused"
    assert data(await api.delete(url)) == {"id": created["id"], "deleted": True}
    assert_error(await api.get(url), 404, "not_found_error")
    assert created["id"] not in await listed_ids(api)


# --- Without a worker --------------------------------------------------------------


async def test_reads_work_without_a_worker(api: httpx.AsyncClient) -> None:
    body = spec(description="no worker here", crew=[agent("a"), agent("b", tools=["send_email"])])
    created = await create(api, body)
    assert await get(api, created["id"]) == created
    assert [w for w in await listed(api) if w["id"] == created["id"]] == [created]
    # Validation needs no worker either.
    assert_error(
        await api.patch(f"/v1/workflows/{created['id']}", json={"nickname": "x"}),
        400,
        "invalid_request_error",
    )


@pytest.mark.timeout(60)
async def test_patch_without_a_worker_is_503_within_about_ten_seconds(
    api: httpx.AsyncClient,
) -> None:
    created = await create(api)
    started = time.monotonic()
    response = await api.patch(f"/v1/workflows/{created['id']}", json={"name": "later"})
    elapsed = time.monotonic() - started
    message = assert_error(response, 503, "service_unavailable")
    assert "worker" in message, message
    assert response.headers.get("retry-after")
    assert 5 <= elapsed <= 13, elapsed
