"""Every activity a worker runs, built with clients from the worker's settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from temporalio.plugin import SimplePlugin

from activities.email_tool import EmailTool, SmtpConfig
from activities.http_tools import HttpTools, tool_http_client
from activities.mcp_tools import McpTools
from activities.models.calls import ModelCalls
from activities.models.providers import configured_providers
from activities.tool_checks import ToolChecks
from activities.webhooks import WebhookSender
from core.settings import Settings


@dataclass
class ActivitySet:
    """A worker's activity callables, and the model clients that must be closed when
    the worker stops (`closed_after`, run as a worker plugin's context)."""

    activities: list[Callable[..., Any]]
    models: ModelCalls

    @contextlib.asynccontextmanager
    async def closed_after(self) -> AsyncIterator[None]:
        """Around a worker's run: close the model clients once the worker has stopped."""
        try:
            yield
        finally:
            await self.models.close()

    def plugin(self) -> SimplePlugin:
        """A worker plugin that closes the clients after the worker stops."""
        return SimplePlugin("loopllama.activity-clients", run_context=self.closed_after)


def model_activities(settings: Settings) -> ActivitySet:
    """The model calls, one activity for every provider (and the names runs recorded
    before it use)."""
    models = ModelCalls(configured_providers(settings))
    return ActivitySet([models.call, models.anthropic_messages, models.offline_messages],
                       models)


def build_activities(settings: Settings) -> ActivitySet:
    """The activities to register on a worker."""
    smtp = SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None
    email = EmailTool(smtp, settings.smtp_from)
    http = HttpTools(tool_http_client(), settings.http_allowlist)
    mcp = McpTools(settings.http_allowlist)
    webhooks = WebhookSender(tool_http_client(), settings.http_allowlist, settings.webhook_key)
    models = model_activities(settings)
    checks = ToolChecks(http)
    return ActivitySet([*models.activities, email.send, http.http_request, http.custom_tool,
                        checks.check, mcp.call, webhooks.deliver], models.models)
