"""Every activity a worker runs, built with clients from the worker's settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic

from activities.anthropic_model import AnthropicModel
from activities.email_tool import EmailTool, SmtpConfig
from activities.http_tools import HttpTools, tool_http_client
from activities.offline_model import offline_messages
from activities.webhooks import WebhookSender
from core.settings import Settings


def anthropic_client(settings: Settings) -> anthropic.AsyncAnthropic | None:
    """One async Anthropic client per worker, or None when no key is configured."""
    if settings.anthropic_api_key is None:
        return None
    return anthropic.AsyncAnthropic(
        api_key=settings.anthropic_api_key.value,
        base_url=settings.anthropic_base_url,
        # Temporal owns retries (visible in the UI); the SDK must not retry underneath.
        max_retries=0,
        timeout=anthropic.Timeout(300.0, connect=10.0),
    )


def model_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The model calls (Claude and the offline model)."""
    model = AnthropicModel(anthropic_client(settings), prompt_cache=settings.prompt_cache)
    return [model.call, offline_messages]


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The activity callables to register on a worker."""
    smtp = SmtpConfig.from_url(settings.smtp_url) if settings.smtp_url else None
    email = EmailTool(smtp, settings.smtp_from)
    http = HttpTools(tool_http_client(), settings.http_allowlist)
    webhooks = WebhookSender(tool_http_client(), settings.http_allowlist, settings.webhook_key)
    return [*model_activities(settings), email.send, http.http_request, http.custom_tool,
            webhooks.deliver]
