"""The providers a worker has, from its settings: one line per provider.

Adding a provider is a module under activities/models/ with a class that meets
`ModelProvider` (base.py) and a factory `(settings) -> provider | None` (None when the
worker is not configured for it), and one line in `PROVIDERS`. Model names route to it
by its name (core/model_routing.py); a provider that takes more than an
OpenAI-compatible endpoint also needs its name in `Settings.model_providers`.
"""

from __future__ import annotations

from collections.abc import Callable

from activities.models.anthropic import anthropic_provider
from activities.models.base import ModelProvider
from activities.models.offline import OfflineProvider
from activities.models.openai_compatible import OpenAICompatible, openai_client
from core.model_routing import ANTHROPIC, OFFLINE, OPENAI
from core.redaction import secret_values
from core.settings import Settings


def openai_provider(settings: Settings) -> ModelProvider | None:
    """OpenAI itself (or what OPENAI_BASE_URL points at), when configured."""
    if settings.openai_api_key is None and settings.openai_base_url is None:
        return None
    key = settings.openai_api_key.value if settings.openai_api_key else None
    client = openai_client(settings.openai_base_url, key, settings.worker_max_activities)
    return OpenAICompatible(OPENAI, client, key_setting="OPENAI_API_KEY",
                            secrets=secret_values(settings),
                            max_tokens_field="max_completion_tokens")


def offline_provider(settings: Settings) -> ModelProvider | None:
    """The offline model: always there."""
    return OfflineProvider()


PROVIDERS: dict[str, Callable[[Settings], ModelProvider | None]] = {
    ANTHROPIC: anthropic_provider,
    OPENAI: openai_provider,
    OFFLINE: offline_provider,
}


def configured_providers(settings: Settings) -> dict[str, ModelProvider]:
    """Every provider this worker is configured for, by name, each with its own client:
    the built-in ones, then each LOOPLLAMA_PROVIDERS endpoint."""
    providers = {name: provider for name, factory in PROVIDERS.items()
                 if (provider := factory(settings)) is not None}
    secrets = secret_values(settings)
    for endpoint in settings.providers:
        key = endpoint.api_key.value if endpoint.api_key else None
        client = openai_client(endpoint.base_url, key, settings.worker_max_activities)
        providers[endpoint.name] = OpenAICompatible(
            endpoint.name, client, key_setting=endpoint.key_setting, secrets=secrets,
            max_tokens_field="max_tokens")
    return providers
