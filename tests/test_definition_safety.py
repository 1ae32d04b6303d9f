"""No silent deletes: a crew definition survives a Temporal cancel request; terminating one
by hand is a hard delete the API then names.

Cancels and terminations go through the `temporal` CLI, as a person would send them
(the UI's "Request Cancellation" sends the same request). Current details are what the
Temporal UI shows; the worker serves them through the built-in metadata query.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from core.devserver import DevServer
from core.settings import Settings
from tests.conftest import crew, eventually
from tests.helpers import create_workflow, temporal_cli, trigger, wait_for_status
from worker import build_worker

OFFLINE = "loopllama-offline"
IGNORED = "A cancel request was ignored"
TERMINATED = "terminated in Temporal"


async def current_details(temporal: Client, workflow_id: str) -> str:
    """The entity's current details, as the Temporal UI fetches them."""
    metadata = await temporal.get_workflow_handle(workflow_id).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    return metadata.current_details


async def details_containing(temporal: Client, workflow_id: str, text: str) -> str:
    """Wait until the current details contain `text`; return them."""

    async def check() -> str | None:
        details = await current_details(temporal, workflow_id)
        return details if text in details else None

    return await eventually(check)


async def status(temporal: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await temporal.get_workflow_handle(workflow_id).describe()).status


def error_message(response: httpx.Response, status_code: int) -> str:
    assert response.status_code == status_code, response.text
    return str(response.json()["error"]["message"])


async def cancel_requests(temporal: Client, workflow_id: str) -> int:
    """How many cancel requests the current run's history holds."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1 for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    )


# --- Current details in normal operation ------------------------------------------


async def test_details_name_the_definition_its_status_and_how_to_change_it(
    api: httpx.AsyncClient, temporal: Client, worker: Worker
) -> None:
    created = await create_workflow(api, crew("writer", model=OFFLINE), name="details crew")
    wid = created["id"]
    details = await details_containing(temporal, wid, "(active)")
    assert "'details crew'" in details
    assert f"PATCH /v1/workflows/{wid}" in details
    assert f"DELETE /v1/workflows/{wid}" in details
    assert IGNORED not in details

    response = await api.post(f"/v1/workflows/{wid}/pause")
    assert response.status_code == 200, response.text
    details = await details_containing(temporal, wid, "(paused)")
    assert f"POST /v1/workflows/{wid}/resume" in details

    response = await api.patch(f"/v1/workflows/{wid}", json={"name": "renamed crew"})
    assert response.status_code == 200, response.text
    assert "'renamed crew'" in await details_containing(temporal, wid, "renamed crew")


# --- Cancel is ignored ------------------------------------------------------------


async def test_a_cancel_from_the_cli_does_not_delete_the_definition(
    api: httpx.AsyncClient, temporal: Client, worker: Worker, dev_server: DevServer
) -> None:
    created = await create_workflow(api, crew("writer", model=OFFLINE), name="keep me")
    wid = created["id"]
    url = f"/v1/workflows/{wid}"
    await details_containing(temporal, wid, "(active)")

    await temporal_cli(dev_server, "workflow", "cancel", "--workflow-id", wid)

    details = await details_containing(temporal, wid, IGNORED)
    assert "'keep me'" in details
    assert f"DELETE /v1/workflows/{wid}" in details
    # The CLI shows the same details (what `temporal workflow metadata` prints).
    shown = json.loads(await temporal_cli(
        dev_server, "workflow", "metadata", "--workflow-id", wid, "-o", "json"
    ))
    assert IGNORED in json.dumps(shown)
    assert await status(temporal, wid) == WorkflowExecutionStatus.RUNNING
    assert await cancel_requests(temporal, wid) == 1

    # Everything still works, through the API.
    response = await api.get(url)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == created
    assert wid in {w["id"] for w in (await api.get("/v1/workflows")).json()["data"]}
    run = await trigger(api, wid, "Still there?")
    await wait_for_status(api, run["id"], "completed", within=60)
    response = await api.patch(url, json={"name": "kept"})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["name"] == "kept"
    details = await details_containing(temporal, wid, "'kept'")
    assert IGNORED in details, "the note outlives later changes"

    # DELETE is the way to delete.
    response = await api.delete(url)
    assert response.status_code == 200, response.text
    error_message(await api.get(url), 404)
    assert await status(temporal, wid) == WorkflowExecutionStatus.COMPLETED


async def test_a_cancel_sent_before_any_worker_ran_it_is_ignored_too(
    api: httpx.AsyncClient, temporal: Client, settings: Settings, dev_server: DevServer
) -> None:
    # No worker yet: the first workflow task carries both the start and the cancel.
    created = await create_workflow(api, crew("writer", model=OFFLINE))
    wid = created["id"]
    await temporal_cli(dev_server, "workflow", "cancel", "--workflow-id", wid)
    async with build_worker(temporal, settings):
        await details_containing(temporal, wid, IGNORED)
        assert await status(temporal, wid) == WorkflowExecutionStatus.RUNNING
        response = await api.post(f"/v1/workflows/{wid}/pause")
        assert response.status_code == 200, response.text
        assert (await api.get(f"/v1/workflows/{wid}")).json()["data"]["status"] == "paused"


async def roll_over(
    api: httpx.AsyncClient, temporal: Client, workflow_id: str, *, cancel_too: bool = False
) -> None:
    """Change the definition until its entity continues as new (a new run id).

    With `cancel_too`, a cancel request goes with every batch of changes, racing the
    rollover on purpose: some land while the old run continues as new.
    """
    handle = temporal.get_workflow_handle(workflow_id)
    url = f"/v1/workflows/{workflow_id}"
    first_run = (await handle.describe()).run_id
    for count in range(150):
        batch: list[Any] = [
            api.patch(url, json={"description": f"change {count}.{i}"}) for i in range(8)
        ]
        if cancel_too:
            batch.append(handle.cancel())
        for response in await asyncio.gather(*batch):
            if response is not None:
                assert response.status_code == 200, response.text
        if (await handle.describe()).run_id != first_run:
            return
    raise AssertionError("never continued as new")


async def test_an_ignored_cancel_survives_continue_as_new(
    api: httpx.AsyncClient, temporal: Client, worker: Worker
) -> None:
    created = await create_workflow(api, crew("writer", model=OFFLINE))
    wid = created["id"]
    url = f"/v1/workflows/{wid}"
    await temporal.get_workflow_handle(wid).cancel()
    await details_containing(temporal, wid, IGNORED)

    await roll_over(api, temporal, wid)
    # The new run got no cancel request, yet still says one was ignored.
    assert await cancel_requests(temporal, wid) == 0
    details = await details_containing(temporal, wid, IGNORED)
    assert created["name"] in details

    await roll_over(api, temporal, wid, cancel_too=True)
    assert await status(temporal, wid) == WorkflowExecutionStatus.RUNNING
    found = (await api.get(url)).json()["data"]
    assert found["created_at"] == created["created_at"]
    assert found["description"].startswith("change ")
    response = await api.patch(url, json={"name": "after-rollover"})
    assert response.status_code == 200, response.text
    assert IGNORED in await details_containing(temporal, wid, "after-rollover")
    response = await api.delete(url)
    assert response.status_code == 200, response.text
    assert await status(temporal, wid) == WorkflowExecutionStatus.COMPLETED


# --- Terminate is a hard delete ---------------------------------------------------


async def test_a_terminated_definition_answers_404_saying_so(
    api: httpx.AsyncClient, temporal: Client, worker: Worker, dev_server: DevServer
) -> None:
    created = await create_workflow(api, crew("writer", model=OFFLINE))
    wid = created["id"]
    url = f"/v1/workflows/{wid}"
    await temporal_cli(dev_server, "workflow", "terminate", "--workflow-id", wid,
                       "--reason", "by hand")
    assert await status(temporal, wid) == WorkflowExecutionStatus.TERMINATED

    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "/runs", {"input": "Anyone there?"}),
        ("PATCH", "", {"name": "too late"}),
        ("POST", "/pause", None),
        ("POST", "/resume", None),
        ("DELETE", "", None),
    ):
        response = await api.request(method, url + suffix, json=body)
        message = error_message(response, 404)
        assert response.json()["error"]["type"] == "not_found_error", response.text
        assert TERMINATED in message, (method, suffix, message)
        assert wid in message
    assert wid not in {w["id"] for w in (await api.get("/v1/workflows")).json()["data"]}


async def test_a_deleted_or_unknown_definition_keeps_the_plain_404(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    created = await create_workflow(api, crew("writer", model=OFFLINE))
    url = f"/v1/workflows/{created['id']}"
    assert (await api.delete(url)).status_code == 200
    for path in (url, "/v1/workflows/ckva" + "0" * 21):
        message = error_message(await api.get(path), 404)
        assert TERMINATED not in message
        assert message.startswith("No workflow with id"), message
