"""The model clients' transport: aiohttp (cheap under hundreds of calls at once), httpx
when a proxy is configured, one connection per activity slot, closed with the worker."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from temporalio.client import Client

from activities.models.anthropic import anthropic_provider, model_http_client
from activities.registry import ActivitySet, build_activities
from core.settings import ProviderEndpoint, Secret, Settings
from tests.conftest import unique_tag
from worker import build_worker

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                    "http_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_model_client_uses_aiohttp_with_a_connection_per_slot(no_proxy: None) -> None:
    client = model_http_client(750)
    assert client is not None
    transport: Any = client._transport
    assert type(transport).__name__ == "AiohttpTransport"
    assert transport.limits.max_connections == 750


def test_a_proxy_in_the_environment_keeps_the_sdk_default(
    no_proxy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert model_http_client(100) is None


def test_without_a_key_there_is_no_client(settings: Settings) -> None:
    assert anthropic_provider(replace(settings, anthropic_api_key=None)) is None


async def test_the_worker_closes_the_model_client_when_it_stops(
    temporal: Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[ActivitySet] = []

    def recording(settings: Settings) -> ActivitySet:
        activities = build_activities(settings)
        built.append(activities)
        return activities

    monkeypatch.setattr("worker.build_activities", recording)
    own = replace(settings, temporal_task_queue=f"tq-close-{unique_tag()}",
                  openai_api_key=Secret("sk-openai-test"),
                  providers=(ProviderEndpoint("local", "http://127.0.0.1:1/v1"),))
    async with build_worker(temporal, own):
        (activities,) = built
        providers: dict[str, Any] = dict(activities.models.providers)
        assert set(providers) == {"anthropic", "openai", "local", "offline"}
        clients = [p._client for name, p in providers.items() if name != "offline"]
        assert not any(client.is_closed() for client in clients)
    assert all(client.is_closed() for client in clients)
