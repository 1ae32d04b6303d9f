"""Webhooks: declared on a workflow, signed per Standard Webhooks, delivered durably."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import loopllama
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from api.app import create_app
from core.settings import Settings
from core.types import RUN_EVENT_TYPES
from tests.conftest import API_KEY, crew, eventually, free_port, start_worker_process
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers import trigger, wait_for_status
from worker import build_worker

OFFLINE = "loopllama-offline"
ALL_EVENTS = list(RUN_EVENT_TYPES)


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Local receivers are reachable because 127.0.0.1 is allow-listed."""
    return replace(settings, http_allowlist=("127.0.0.1",))


@pytest.fixture
async def hook_api(temporal: Client, hook_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(hook_settings, temporal)),
        base_url="http://t", headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


@pytest.fixture
async def hook_worker(temporal: Client, hook_settings: Settings) -> AsyncIterator[Worker]:
    async with build_worker(temporal, hook_settings) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


async def create_with_hooks(api: httpx.AsyncClient, hooks: list[dict[str, Any]],
                            **fields: Any) -> dict[str, Any]:
    response = await api.post("/v1/workflows", json={
        "name": "hooked", "crew": fields.pop("crew", crew("a", "b", model=OFFLINE)),
        "webhooks": hooks, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def verified(secret: str, delivery: Any) -> dict[str, Any]:
    return loopllama.verify_webhook(secret, delivery.headers, delivery.body)


# ------------------------------------------------------------------- declaring


async def test_urls_and_events_are_checked_at_create_and_update(
    api: httpx.AsyncClient, hook_api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    refused = [
        ([{"url": "https://127.0.0.1:9/h", "events": ["run.completed"]}], "non-public"),
        ([{"url": receiver.url, "events": ["run.completed"]}], "plain http"),
        ([{"url": "http://example.com/h", "events": ["run.completed"]}], "plain http"),
        ([{"url": "https://example.com/h", "events": ["run.exploded"]}], "events"),
        ([{"url": "https://example.com/h", "events": []}], "events"),
        ([{"url": "https://example.com/h", "events": ["run.failed"]}] * 6, "webhooks"),
    ]
    for hooks, expected in refused:
        response = await api.post("/v1/workflows", json={
            "name": "x", "crew": crew("a", model=OFFLINE), "webhooks": hooks})
        assert response.status_code == 400, (hooks, response.text)
        assert expected in response.json()["error"]["message"], response.text
    created = await create_with_hooks(hook_api, [{"url": receiver.url, "events": ALL_EVENTS}])
    assert created["webhooks"] == [{"url": receiver.url, "events": ALL_EVENTS}]
    patched = await api.patch(f"/v1/workflows/{created['id']}", json={
        "webhooks": [{"url": "http://10.0.0.1/x", "events": ["run.failed"]}]})
    assert patched.status_code == 400 and "webhooks.0.url" in patched.text


async def test_the_secret_is_shown_on_create_and_rotation_only(
    hook_api: httpx.AsyncClient, hook_worker: Worker, receiver: WebhookReceiver
) -> None:
    created = await create_with_hooks(hook_api, [{"url": receiver.url, "events": ["run.started"]}])
    secret = created["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) == 6 + 44
    got = (await hook_api.get(f"/v1/workflows/{created['id']}")).json()["data"]
    assert "webhook_secret" not in got
    assert all("webhook_secret" not in w
               for w in (await hook_api.get("/v1/workflows")).json()["data"])
    rotated = await hook_api.post(f"/v1/workflows/{created['id']}/webhook-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["webhook_secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    # Deliveries are signed with the new one.
    run_id = (await trigger(hook_api, created["id"], "go"))["id"]
    delivery = await eventually(lambda: _first(receiver))
    body = verified(new_secret, delivery)
    assert (body["type"], body["data"]["id"]) == ("run.started", run_id)
    with pytest.raises(loopllama.WebhookVerificationError):
        verified(secret, delivery)
    missing = await hook_api.post("/v1/workflows/ckva000000000000000000000/webhook-secret")
    assert missing.status_code == 404


async def _first(receiver: WebhookReceiver) -> Any:
    found = receiver.deliveries()
    return found[0] if found else None


# ------------------------------------------------------------------- delivering


async def test_every_event_is_delivered_signed_and_retried_with_the_same_id(
    hook_api: httpx.AsyncClient, hook_worker: Worker, receiver: WebhookReceiver,
    temporal: Client,
) -> None:
    receiver.fail_next(500, 503)  # the first two answers fail
    created = await create_with_hooks(
        hook_api, [{"url": receiver.url, "events": ALL_EVENTS}],
        crew=crew("asker", model=OFFLINE, tools=["send_email"]),
        human_in_the_loop={"allow_input_requests": True},
    )
    secret = created["webhook_secret"]
    run_id = (await trigger(hook_api, created["id"], "ask me about tone, then finish"))["id"]
    paused = await wait_for_status(hook_api, run_id, "waiting_input")
    await hook_api.post(f"/v1/runs/{run_id}/respond", json={
        "action": "input", "input": "Warm.", "pause_id": paused["pending"]["id"]})
    await wait_for_status(hook_api, run_id, "completed")

    async def all_accepted() -> list[Any] | None:
        accepted = [d for d in receiver.deliveries() if d.status == 204]
        return accepted if len(accepted) >= 6 else None

    accepted = await eventually(all_accepted, within=30)
    bodies = [verified(secret, d) for d in accepted]
    types = sorted(b["type"] for b in bodies)
    assert types == sorted(["run.started", "step.started", "run.waiting_input",
                            "run.resumed", "step.completed", "run.completed"])
    for delivery, body in zip(accepted, bodies, strict=True):
        assert set(body) == {"type", "timestamp", "data"}
        assert body["data"]["id"] == run_id and "steps" not in body["data"]
        assert delivery.headers["content-type"] == "application/json"
    waiting = next(b for b in bodies if b["type"] == "run.waiting_input")
    assert waiting["data"]["pending"]["prompt"] and waiting["data"]["status"] == "waiting_input"
    step_event = next(b for b in bodies if b["type"] == "step.completed")
    assert step_event["data"]["step"]["role"] == "asker"
    # The failed attempts carried the id their event is finally delivered with.
    failed = [d for d in receiver.deliveries() if d.status >= 500]
    assert len(failed) == 2
    accepted_ids = {d.headers["webhook-id"] for d in accepted}
    assert {d.headers["webhook-id"] for d in failed} <= accepted_ids
    assert len(accepted_ids) == len(accepted)  # one id per event


async def test_a_receiver_that_refuses_is_not_retried(
    hook_api: httpx.AsyncClient, hook_worker: Worker, receiver: WebhookReceiver,
    temporal: Client,
) -> None:
    receiver.fail_next(410)
    created = await create_with_hooks(hook_api, [{"url": receiver.url,
                                                   "events": ["run.completed"]}])
    run_id = (await trigger(hook_api, created["id"], "x"))["id"]
    await wait_for_status(hook_api, run_id, "completed")

    async def delivery_failed() -> bool:
        rows = [row async for row in temporal.list_workflows(
            f"WorkflowType = 'WebhookDelivery' AND WorkflowId STARTS_WITH '{run_id}'")]
        return bool(rows) and rows[0].status == WorkflowExecutionStatus.FAILED

    await eventually(delivery_failed)
    assert [d.status for d in receiver.deliveries()] == [410]


async def test_a_dead_receiver_never_holds_the_run_up(
    hook_api: httpx.AsyncClient, hook_worker: Worker, temporal: Client,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens there
    created = await create_with_hooks(hook_api, [{"url": dead, "events": ALL_EVENTS}])
    run_id = (await trigger(hook_api, created["id"], "x"))["id"]
    done = await wait_for_status(hook_api, run_id, "completed", "failed", within=15)
    assert done["status"] == "completed"
    rows = [row async for row in temporal.list_workflows(
        f"WorkflowType = 'WebhookDelivery' AND WorkflowId STARTS_WITH '{run_id}'")]
    assert rows and all(row.status == WorkflowExecutionStatus.RUNNING for row in rows)
    for row in rows:  # still trying; the test ends them
        await temporal.get_workflow_handle(row.id).terminate("test done")


async def test_a_worker_killed_before_delivery_loses_no_event(
    hook_api: httpx.AsyncClient, hook_settings: Settings, receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    receiver.fail_next(*[503] * 1000)  # nothing is accepted while the first worker lives
    created = await create_with_hooks(hook_api, [{"url": receiver.url,
                                                   "events": ["run.completed"]}])
    worker = start_worker_process(hook_settings, tmp_path / "worker.log")
    try:
        run_id = (await trigger(hook_api, created["id"], "x"))["id"]
        await wait_for_status(hook_api, run_id, "completed", within=30)
        await eventually(lambda: _first(receiver))  # an attempt was made, and refused
        worker.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.wait, 10)
        receiver.state.statuses.clear()
        worker = start_worker_process(hook_settings, tmp_path / "worker2.log")

        async def delivered() -> Any:
            return next((d for d in receiver.deliveries() if d.status == 204), None)

        delivery = await eventually(delivered, within=60)
        body = verified(created["webhook_secret"], delivery)
        assert (body["type"], body["data"]["id"], body["data"]["status"]) == (
            "run.completed", run_id, "completed")
        ids = {d.headers["webhook-id"] for d in receiver.deliveries()}
        assert len(ids) == 1
    finally:
        worker.kill()
        await asyncio.to_thread(worker.wait, 10)


def test_verify_webhook_follows_the_standard() -> None:
    # The Standard Webhooks specification's own example.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
               "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    body = '{"test": 2432232314}'
    assert loopllama.verify_webhook(secret, headers, body, now=1614265330) == json.loads(body)
    with pytest.raises(loopllama.WebhookVerificationError):
        loopllama.verify_webhook(secret, headers, body + " ", now=1614265330)
    with pytest.raises(loopllama.WebhookVerificationError):
        loopllama.verify_webhook(secret, headers, body, now=1614265330 + 301)
