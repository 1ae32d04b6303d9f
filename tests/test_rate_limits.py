"""Model calls held to a rate per model (LOOPLLAMA_MODEL_RATE_LIMITS), with Temporal's
own task-queue rate limiting."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from core.settings import Settings, SettingsError
from tests.conftest import API_KEY, crew, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic, Reply, error_reply, text_reply
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_model_workers, build_worker

RATE = 5.0
BURST = 3 * RATE
RUNS = 40


class RateLimitedModel:
    """The fake's default answer: 429 past `RATE` calls a second, measured as model APIs
    do, with a token bucket refilled at `RATE` a second. Its capacity allows a burst of
    three times the rate: Temporal's limiter is a bucket too, and on a loaded machine the
    fake's HTTP server can stall and then take the calls Temporal spaced out in one
    clump (CI saw a single refusal at twice the rate; real limits, per minute, allow far
    more). The sustained rate is held to `RATE` below, which is what the limit is for."""

    def __init__(self, fake: FakeAnthropic) -> None:
        self.fake = fake
        self.times: list[float] = []
        self.refused = 0
        self.tokens = BURST
        self.lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            now = self.fake.requests[-1].received_at
            if self.times:
                self.tokens = min(BURST, self.tokens + (now - self.times[-1]) * RATE)
            self.times.append(now)
            if self.tokens < 1:
                self.refused += 1
                return error_reply(429, "rate_limit_error", "slow down")
            self.tokens -= 1
            return text_reply("ok")

    def calls_per_second(self) -> float:
        """The average rate after the first second's burst."""
        later = [t for t in self.times if t - self.times[0] >= 1.0]
        return (len(later) - 1) / (later[-1] - later[0]) if len(later) > 1 else 0.0


@contextlib.asynccontextmanager
async def limited_stack(temporal: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(build_worker(temporal, settings))
        for worker in build_model_workers(temporal, settings):
            await stack.enter_async_context(worker)
        api = await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, temporal)),
            base_url="http://t", headers={"Authorization": f"Bearer {API_KEY}"}))
        yield api


async def test_a_burst_of_runs_keeps_to_the_model_rate(
    temporal: Client, settings: Settings, fake_anthropic: FakeAnthropic
) -> None:
    limited = replace(settings, model_rate_limits=(("claude-sonnet-4-6", RATE),))
    model = RateLimitedModel(fake_anthropic)
    fake_anthropic.set_default(model)
    try:
        async with limited_stack(temporal, limited) as api:
            workflow = await create_workflow(api, crew("writer", tag=unique_tag()))
            run_ids = [r["id"] for r in await asyncio.gather(
                *(trigger(api, workflow["id"], f"run {n}") for n in range(RUNS)))]
            done = await asyncio.gather(*(
                wait_for_status(api, run_id, "completed", "failed", within=60)
                for run_id in run_ids))
    finally:
        fake_anthropic.set_default(None)
    assert all(run["status"] == "completed" for run in done)
    start = model.times[0]
    assert len(model.times) == RUNS and model.refused == 0, (
        model.refused, [round(t - start, 2) for t in model.times])
    assert model.calls_per_second() <= RATE * 1.1


def test_rate_limits_are_parsed_and_checked() -> None:
    parsed = Settings.from_env({"LOOPLLAMA_MODEL_RATE_LIMITS":
                                "claude-sonnet-4-6=5/s, claude-opus-4-6=30/m"})
    assert parsed.model_rate_limits == (("claude-sonnet-4-6", 5.0), ("claude-opus-4-6", 0.5))
    assert parsed.model_task_queue("claude-opus-4-6") == "loopllama.model.claude-opus-4-6"
    assert parsed.model_task_queue("claude-haiku-4-5") is None
    for bad in ("claude=5", "claude=0/s", "claude=5/h", "=5/s"):
        with pytest.raises(SettingsError, match="LOOPLLAMA_MODEL_RATE_LIMITS"):
            Settings.from_env({"LOOPLLAMA_MODEL_RATE_LIMITS": bad})
