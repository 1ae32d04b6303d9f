"""`Idempotency-Key` on create and trigger: a retried request never creates twice."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.conftest import crew
from tests.helpers import create_workflow, wait_for_status

OFFLINE_CREW = crew("solo", model="loopllama-offline")


async def post_run(api: httpx.AsyncClient, workflow_id: str, text: str,
                   key: str) -> httpx.Response:
    return await api.post(f"/v1/workflows/{workflow_id}/runs", json={"input": text},
                          headers={"Idempotency-Key": key})


async def list_ids(api: httpx.AsyncClient, workflow_id: str) -> list[str]:
    return [r["id"] for r in (await api.get(f"/v1/workflows/{workflow_id}/runs")).json()["data"]]


async def test_a_retried_trigger_returns_the_same_run(api: httpx.AsyncClient, worker: Any) -> None:
    workflow = await create_workflow(api, OFFLINE_CREW)
    first = await post_run(api, workflow["id"], "once", "key-1")
    assert first.status_code == 202, first.text
    # The request that created the run answers as the reference says: queued.
    assert first.json()["data"]["status"] == "queued"
    run_id = first.json()["data"]["id"]
    await wait_for_status(api, run_id, "completed")
    # Even after completion, and after the workflow was paused, a retry finds that run.
    assert (await api.post(f"/v1/workflows/{workflow['id']}/pause")).status_code == 200
    again = await post_run(api, workflow["id"], "once", "key-1")
    assert again.status_code == 202, again.text
    assert again.json()["data"]["id"] == run_id
    assert again.json()["data"]["status"] == "completed"
    assert "steps" not in again.json()["data"]
    assert await list_ids(api, workflow["id"]) == [run_id]


async def test_same_key_with_another_input_is_409(api: httpx.AsyncClient) -> None:
    workflow = await create_workflow(api, OFFLINE_CREW)
    assert (await post_run(api, workflow["id"], "one", "key-2")).status_code == 202
    other = await post_run(api, workflow["id"], "two", "key-2")
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]["message"]


async def test_keys_are_per_workflow_and_distinct_keys_make_distinct_runs(
    api: httpx.AsyncClient,
) -> None:
    first = await create_workflow(api, OFFLINE_CREW)
    second = await create_workflow(api, OFFLINE_CREW)
    a = (await post_run(api, first["id"], "x", "shared")).json()["data"]["id"]
    b = (await post_run(api, second["id"], "x", "shared")).json()["data"]["id"]
    c = (await post_run(api, first["id"], "x", "other")).json()["data"]["id"]
    assert len({a, b, c}) == 3


async def test_concurrent_retries_start_one_run(api: httpx.AsyncClient) -> None:
    workflow = await create_workflow(api, OFFLINE_CREW)
    responses = await asyncio.gather(
        *(post_run(api, workflow["id"], "burst", "key-3") for _ in range(6))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert len(await list_ids(api, workflow["id"])) == 1


async def test_a_retried_create_returns_the_same_workflow(api: httpx.AsyncClient,
                                                          worker: Any) -> None:
    body = {"name": "idempotent crew", "crew": OFFLINE_CREW}
    headers = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    first = await api.post("/v1/workflows", json=body, headers=headers)
    again = await api.post("/v1/workflows", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == again.json()
    different = await api.post("/v1/workflows", json={**body, "name": "other"}, headers=headers)
    assert different.status_code == 409
    workflow_id = first.json()["data"]["id"]
    assert (await api.delete(f"/v1/workflows/{workflow_id}")).status_code == 200
    after_delete = await api.post("/v1/workflows", json=body, headers=headers)
    assert after_delete.status_code == 409
    assert "deleted" in after_delete.json()["error"]["message"]


async def test_malformed_keys_are_400(api: httpx.AsyncClient) -> None:
    workflow = await create_workflow(api, OFFLINE_CREW)
    for key in ("has space", "x" * 256):
        response = await post_run(api, workflow["id"], "x", key)
        assert response.status_code == 400, key
        assert "Idempotency-Key" in response.json()["error"]["message"]
    assert await list_ids(api, workflow["id"]) == []
