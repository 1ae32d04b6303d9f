"""The run event stream: `GET /v1/runs/{id}/events` (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from core.devserver import DevServer
from core.settings import Settings
from tests.conftest import API_KEY, crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, temporal_cli, trigger, uvicorn_in_thread, wait_for_status
from tests.test_lifecycle import slow_run

OFFLINE = "loopllama-offline"


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body: id, event, data (parsed); comments dropped."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ": " not in line:
                continue
            name, value = line.split(": ", 1)
            fields[name] = value
        if fields:
            events.append({"id": int(fields["id"]), "event": fields["event"],
                           "data": json.loads(fields["data"])})
    return events


async def read_events(api: httpx.AsyncClient, run_id: str, **headers: str
                      ) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/runs/{run_id}/events",
                             headers={"Accept": "text/event-stream", **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] + (f":{e['data']['data']['order']}" if e["event"].startswith("step.")
                          else "") for e in events]


async def test_a_finished_run_replays_every_event_in_order(
    api: httpx.AsyncClient, worker: Worker, temporal: Client, settings: Settings
) -> None:
    workflow = await create_workflow(api, crew("planner", "writer", "editor", model=OFFLINE))
    run_id = (await trigger(api, workflow["id"], "Plan a launch."))["id"]
    done = await wait_for_status(api, run_id, "completed")
    events = await read_events(api, run_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert kinds(events) == [
        "run.started", "step.started:0", "step.completed:0", "step.started:1",
        "step.completed:1", "step.started:2", "step.completed:2", "run.completed",
    ]
    for event in events:
        payload = event["data"]
        assert payload["type"] == event["event"] and payload["run_id"] == run_id
        assert set(payload) == {"type", "run_id", "created_at", "data"}
    completed = events[-1]["data"]["data"]
    assert "steps" not in completed and completed["pending"] is None
    assert {k: v for k, v in completed.items()} == {
        k: v for k, v in done.items() if k != "steps"}
    step = events[4]["data"]["data"]
    assert step == done["steps"][1]  # the step as GET shows it, input included

    # Resume after an id; and any other API process tells the same events.
    assert await read_events(api, run_id, **{"Last-Event-ID": "5"}) == events[5:]
    other = create_app(settings, temporal)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other),
                                 base_url="http://other",
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as other_api:
        assert await read_events(other_api, run_id) == events


async def test_refusals(api: httpx.AsyncClient, anon_api: httpx.AsyncClient, worker: Worker
                        ) -> None:
    assert (await anon_api.get("/v1/runs/ckrun000000000000000000000/events")).status_code == 401
    missing = await api.get("/v1/runs/ckrun000000000000000000000/events")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    workflow = await create_workflow(api, crew("a", model=OFFLINE))
    run_id = (await trigger(api, workflow["id"], "x"))["id"]
    bad = await api.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]["message"]


async def test_live_pauses_resumes_and_closes_at_the_end(
    settings: Settings, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    writer = for_role(tag, "writer")
    fake_anthropic.reply_tool_use("ask_human", {"question": "Tone?"}, when=writer)
    fake_anthropic.reply_text("Done.", when=writer)
    async with uvicorn_in_thread(settings) as url, httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as http:
        workflow = await create_workflow(
            http, crew("writer", tag=tag), human_in_the_loop={"allow_input_requests": True})
        run_id = (await trigger(http, workflow["id"], "Write."))["id"]
        seen: list[dict[str, Any]] = []
        async with http.stream("GET", f"/v1/runs/{run_id}/events") as response:
            assert response.status_code == 200
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for event in parse_sse("\n\n".join(blocks) + "\n\n"):
                    seen.append(event)
                    if event["event"] == "run.waiting_input":
                        pause = event["data"]["data"]["pending"]
                        assert pause["prompt"] == "Tone?" and pause["id"]
                        answered = await http.post(f"/v1/runs/{run_id}/respond", json={
                            "action": "input", "input": "Warm", "pause_id": pause["id"]})
                        assert answered.status_code == 202
        # The server closed the stream after the end.
    assert kinds(seen) == ["run.started", "step.started:0", "run.waiting_input",
                           "run.resumed", "step.completed:0", "run.completed"]


async def test_a_terminated_run_ends_its_stream_failed(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic,
    dev_server: DevServer,
) -> None:
    run_id, _ = await slow_run(api, fake_anthropic)
    await temporal_cli(dev_server, "workflow", "terminate", "--workflow-id", run_id,
                 "--reason", "operator stop")
    events = await read_events(api, run_id)
    assert kinds(events) == ["run.started", "step.started:0", "run.failed"]
    assert events[-1]["data"]["data"]["error"] == "Terminated in Temporal: operator stop"


async def test_a_retried_run_goes_on_with_new_ids(
    api: httpx.AsyncClient, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    tag = unique_tag()
    planner, writer = for_role(tag, "planner"), for_role(tag, "writer")
    fake_anthropic.reply_text("the plan", when=planner)
    fake_anthropic.reply_error(400, message="bad", when=writer)
    workflow = await create_workflow(api, crew("planner", "writer", tag=tag))
    run_id = (await trigger(api, workflow["id"], "Draft."))["id"]
    await wait_for_status(api, run_id, "failed")
    before = await read_events(api, run_id)
    assert kinds(before) == ["run.started", "step.started:0", "step.completed:0",
                             "step.started:1", "step.failed:1", "run.failed"]
    fake_anthropic.reply_text("the draft", when=writer)
    assert (await api.post(f"/v1/runs/{run_id}/retry")).status_code == 202
    await wait_for_status(api, run_id, "completed")
    after = await read_events(api, run_id)
    assert after[:len(before)] == before
    assert kinds(after[len(before):]) == ["run.started", "step.started:1", "step.completed:1",
                                          "run.completed"]
    assert [e["id"] for e in after] == list(range(1, len(after) + 1))


async def test_the_sdk_streams_and_resumes(
    settings: Settings, worker: Worker, fake_anthropic: FakeAnthropic
) -> None:
    import loopllama

    async with uvicorn_in_thread(settings) as url:
        async with loopllama.AsyncLoopLlama(API_KEY, url) as sdk:
            workflow = await sdk.workflows.create(
                name="s", crew=[{"role": "a", "model": OFFLINE}, {"role": "b", "model": OFFLINE}])
            run = await sdk.runs.trigger(workflow.id, "x")
            events = [event async for event in sdk.runs.stream(run)]
            assert [e.type for e in events][-1] == "run.completed"
            assert [e.id for e in events] == list(range(1, len(events) + 1))
            last = events[-1].run
            assert last is not None and last.status == "completed"
            assert events[2].step is not None and events[2].step.role == "a"
            resumed = [event async for event in sdk.runs.stream(run.id, last_event_id=3)]
            assert resumed == events[3:]

        def sync_read() -> list[loopllama.RunEvent]:
            with loopllama.LoopLlama(API_KEY, url) as client:
                return list(client.runs.stream(run.id))

        assert await asyncio.to_thread(sync_read) == events
