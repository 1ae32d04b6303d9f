"""Every activity a worker runs, built with clients from the worker's settings."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
from temporalio.plugin import SimplePlugin

from activities.anthropic_model import AnthropicModel
from activities.email_tool import EmailTool, SmtpConfig
from activities.http_tools import HttpTools, tool_http_client
from activities.offline_model import offline_messages
from activities.webhooks import WebhookSender
from core.redaction import secret_values
from core.settings import Settings

# A model call may take minutes; a model API that does not answer a connect is down.
MODEL_TIMEOUT = anthropic.Timeout(300.0, connect=10.0)


def anthropic_client(settings: Settings) -> anthropic.AsyncAnthropic | None:
    """One async Anthropic client per worker, or None when no key is configured."""
    if settings.anthropic_api_key is None:
        return None
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.value,
        base_url=settings.anthropic_base_url,
        # Temporal owns retries (visible in the UI); the SDK must not retry underneath.
        max_retries=0,
        timeout=MODEL_TIMEOUT,
        http_client=model_http_client(settings.worker_max_activities),
    )


def model_http_client(max_connections: int) -> httpx2.AsyncClient | None:
    """The model client's HTTP transport: aiohttp, unless a proxy is configured.

    With hundreds of model calls in flight, httpx's connection pool costs 2.5-3x the CPU
    per call of the SDK's aiohttp transport (5.4 vs 1.6-2.0 ms at 200-600 calls at once,
    most of a worker's CPU per call; `python -m bench.bench_runs --profile`). One
    connection per call in flight: `max_connections` follows the worker's activity slots.
    The aiohttp transport ignores HTTPS_PROXY and friends, so with a proxy in the
    environment the SDK's default httpx client (None here), which honours it, is kept.
    """
    proxies = urllib.request.getproxies()
    if proxies.get("https") or proxies.get("all"):
        return None
    return anthropic.DefaultAioHttpClient(
        # httpx2: the anthropic SDK's own fork of httpx, which its clients are typed with.
        limits=httpx2.Limits(max_connections=max(max_connections, 1)),
        timeout=MODEL_TIMEOUT,
    )


@dataclass
class ActivitySet:
    """A worker's activity callables, and the network client they share that must be
    closed when the worker stops (`closed_after`, run as a worker plugin's context)."""

    activities: list[Callable[..., Any]]
    model_client: anthropic.AsyncAnthropic | None

    @contextlib.asynccontextmanager
    async def closed_after(self) -> AsyncIterator[None]:
        """Around a worker's run: close the model client once the worker has stopped."""
        try:
            yield
        finally:
            if self.model_client is not None:
                await self.model_client.close()

    def plugin(self) -> SimplePlugin:
        """A worker plugin that closes the clients after the worker stops."""
        return SimplePlugin("loopllama.activity-clients", run_context=self.closed_after)


def model_activities(settings: Settings) -> ActivitySet:
    """The model calls (Claude and the offline model)."""
    client = anthropic_client(settings)
    model = AnthropicModel(client, prompt_cache=settings.prompt_cache,
                           secrets=secret_values(settings))
    return ActivitySet([model.call, offline_messages], client)


def build_activities(settings: Settings) -> ActivitySet:
    """The activities to register on a worker."""
    smtp = SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None
    email = EmailTool(smtp, settings.smtp_from)
    http = HttpTools(tool_http_client(), settings.http_allowlist)
    webhooks = WebhookSender(tool_http_client(), settings.http_allowlist, settings.webhook_key)
    models = model_activities(settings)
    return ActivitySet([*models.activities, email.send, http.http_request, http.custom_tool,
                        webhooks.deliver], models.model_client)
