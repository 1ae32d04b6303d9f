"""`GET /v1/workflows/{id}/runs`: the 50 most recent runs, newest first, by creation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client

from api.services.recent_runs import RecentRuns
from api.services.run_list import newest_runs
from tests.conftest import crew, eventually, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, trigger, wait_for_status


async def listed_ids(api: httpx.AsyncClient, workflow_id: str) -> list[str]:
    response = await api.get(f"/v1/workflows/{workflow_id}/runs")
    assert response.status_code == 200, response.text
    runs = response.json()["data"]
    created = [r["created_at"] for r in runs]
    assert created == sorted(created, reverse=True), "not newest first"
    return [r["id"] for r in runs]


async def all_finished(api: httpx.AsyncClient, workflow_id: str, count: int) -> bool:
    runs = (await api.get(f"/v1/workflows/{workflow_id}/runs")).json()["data"]
    return len(runs) == min(count, 50) and all(r["status"] == "completed" for r in runs)


async def test_55_runs_list_the_50_newest(api: httpx.AsyncClient, worker: Any) -> None:
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    triggered = [(await trigger(api, workflow["id"], f"run {i}"))["id"] for i in range(55)]
    await eventually(lambda: all_finished(api, workflow["id"], 55), within=60)
    assert await listed_ids(api, workflow["id"]) == list(reversed(triggered))[:50]


async def test_order_is_by_creation_even_when_runs_finish_out_of_order(
    api: httpx.AsyncClient, worker: Any, fake_anthropic: FakeAnthropic
) -> None:
    """An old run still running, and a middle run that finishes last, keep their places."""
    tag = unique_tag()
    hold_oldest, hold_middle = threading.Event(), threading.Event()

    def is_input(text: str):  # type: ignore[no-untyped-def]
        return lambda request: request["messages"][0]["content"] == f"{tag} {text}"

    fake_anthropic.reply_text("oldest done", hold=hold_oldest, when=is_input("oldest"))
    fake_anthropic.reply_text("middle done", hold=hold_middle, when=is_input("middle"))
    workflow = await create_workflow(api, crew("solo"))
    try:
        oldest = (await trigger(api, workflow["id"], f"{tag} oldest"))["id"]
        first = [(await trigger(api, workflow["id"], f"{tag} a{i}"))["id"] for i in range(29)]
        middle = (await trigger(api, workflow["id"], f"{tag} middle"))["id"]
        last = [(await trigger(api, workflow["id"], f"{tag} b{i}"))["id"] for i in range(25)]
        newest_first = list(reversed([oldest, *first, middle, *last]))

        async def others_done() -> bool:
            runs = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
            return sum(r["status"] == "completed" for r in runs) == 49

        await eventually(others_done, within=60)
        # The oldest (still running) is 56th: left out; the middle one (running) is in.
        assert await listed_ids(api, workflow["id"]) == newest_first[:50]
        hold_middle.set()
        await wait_for_status(api, middle, "completed")
        # The middle run closed last of all; it keeps its place by creation time.
        assert await listed_ids(api, workflow["id"]) == newest_first[:50]
        hold_oldest.set()
        await wait_for_status(api, oldest, "completed")
        assert await listed_ids(api, workflow["id"]) == newest_first[:50]
    finally:
        hold_oldest.set()
        hold_middle.set()


async def test_a_run_is_listed_as_soon_as_its_trigger_answers(
    api: httpx.AsyncClient, worker: Any
) -> None:
    """Triggers no longer wait for Temporal's visibility; a list right after one does."""
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    triggered: list[str] = []
    for i in range(6):
        triggered.insert(0, (await trigger(api, workflow["id"], f"run {i}"))["id"])
        assert await listed_ids(api, workflow["id"]) == triggered


def test_recent_runs_forget_what_is_listed_and_what_is_old() -> None:
    now = [100.0]
    recent = RecentRuns(horizon=2.0, clock=lambda: now[0])
    recent.started("ckvaA", "ckrun1")
    recent.started("ckvaA", "ckrun2")
    recent.started("ckvaB", "ckrun3")
    assert recent.pending("ckvaA") == ["ckrun1", "ckrun2"]
    recent.listed("ckvaA", ["ckrun1"])
    assert recent.pending("ckvaA") == ["ckrun2"] and recent.pending("ckvaB") == ["ckrun3"]
    now[0] += 2.0
    assert recent.pending("ckvaA") == [] and recent.pending("ckvaB") == []
    # Crews nobody lists: every new note sweeps out the expired ones.
    for i in range(1000):
        now[0] += 0.01
        recent.started(f"ckva{i}", f"ckrun{i}")
    assert len(recent) == 200


async def test_early_stop_of_the_scan_keeps_the_answer_right(
    api: httpx.AsyncClient, worker: Any, temporal: Client
) -> None:
    """With no clock-skew allowance the scan stops as early as it can; still exact."""
    workflow = await create_workflow(api, crew("solo", model="loopllama-offline"))
    triggered = [(await trigger(api, workflow["id"], f"run {i}"))["id"] for i in range(8)]
    await eventually(lambda: all_finished(api, workflow["id"], 8), within=60)
    for limit in (1, 3, 5, 8, 20):
        runs = await newest_runs(temporal, workflow["id"], limit, skew=timedelta(0))
        assert [r.id for r in runs] == list(reversed(triggered))[:limit]


def first_input(text: str) -> Callable[[dict[str, Any]], bool]:
    """A fake reply rule: the request whose first message is `text`."""
    return lambda request: bool(request["messages"][0]["content"] == text)


async def test_the_second_listing_finds_the_newest_when_the_first_page_cannot(
    api: httpx.AsyncClient, worker: Any, temporal: Client, fake_anthropic: FakeAnthropic
) -> None:
    """The oldest runs finish last, so the first page (by close time) holds only them
    and cannot rule the rest out: the list must read the runs created since its last
    place (or, with the ranking not yet full, all of them). Pages of 4 stand in for a
    crew of hundreds."""
    tag = unique_tag()
    release = threading.Event()
    workflow = await create_workflow(api, crew("solo"))
    try:
        for i in range(4):
            fake_anthropic.reply_text("late", hold=release, when=first_input(f"{tag} slow {i}"))
        slow = [(await trigger(api, workflow["id"], f"{tag} slow {i}"))["id"]
                for i in range(4)]
        fast = [(await trigger(api, workflow["id"], f"{tag} fast {i}"))["id"]
                for i in range(8)]

        async def fast_done() -> bool:
            runs = (await api.get(f"/v1/workflows/{workflow['id']}/runs")).json()["data"]
            return sum(r["status"] == "completed" for r in runs) == 8

        await eventually(fast_done, within=60)
    finally:
        release.set()
    await eventually(lambda: all_finished(api, workflow["id"], 12), within=60)
    newest_first = list(reversed(slow + fast))
    for limit in (1, 3, 4, 6, 12):
        runs = await newest_runs(temporal, workflow["id"], limit,
                                 skew=timedelta(hours=1), page_size=4)
        assert [r.id for r in runs] == newest_first[:limit], limit

