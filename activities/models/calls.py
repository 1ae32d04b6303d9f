"""The worker's one model-call activity: it routes each call by model name
(core/model_routing.py) to the provider that serves it.

Everything that is the same for every provider happens here: the trace's attributes,
the metrics, the heartbeats that let Temporal notice a dead worker, and the failure for
a model whose provider this worker lacks (at once, not retried: the configuration must
change). A completed call is recorded in the run's history, so no retry, replay or
worker crash pays for it again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.models.base import ModelProvider
from core.contract import ANTHROPIC_MESSAGES, MODEL_CALL, MODEL_NOT_CONFIGURED, OFFLINE_MESSAGES
from core.model_routing import ANTHROPIC, OFFLINE_MODEL, OPENAI, route, unroutable
from core.tracing import annotate_model_call, annotate_model_usage
from core.types import ModelRequest, ModelResponse
from core.worker_metrics import record_model_call


class ModelCalls:
    """Model calls for the providers this worker has (by name; see core/model_routing)."""

    def __init__(self, providers: Mapping[str, ModelProvider]) -> None:
        self._providers = dict(providers)

    @property
    def providers(self) -> Mapping[str, ModelProvider]:
        """The providers by name (what LOOPLLAMA_PROVIDERS and the keys configured)."""
        return self._providers

    @activity.defn(name=MODEL_CALL)
    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send `request` to the provider of its model; its failures are classified as
        the provider's module says (retried, or failing the step at once)."""
        found = route(request.model)
        provider = self._providers.get(found.provider) if found is not None else None
        if found is None or provider is None:
            record_model_call(request.model, None, error_class=MODEL_NOT_CONFIGURED)
            raise ApplicationError(not_configured(request.model), type=MODEL_NOT_CONFIGURED,
                                   non_retryable=True)
        annotate_model_call(provider.name, request.model)
        started = time.monotonic()
        try:
            async with heartbeating():
                response = await provider.call(request.model_copy(update={"model": found.model}))
        except ApplicationError as err:
            record_model_call(request.model, started, error_class=err.type or "ModelError")
            raise
        annotate_model_usage(response)
        record_model_call(request.model, started, tokens={
            "input": response.tokens_in, "output": response.tokens_out,
            "cache_read": response.tokens_in_cached,
            "cache_write": response.tokens_in_cache_write})
        return response

    # Runs recorded before every model call was MODEL_CALL schedule these; they are the
    # same call.
    @activity.defn(name=ANTHROPIC_MESSAGES)
    async def anthropic_messages(self, request: ModelRequest) -> ModelResponse:
        """A Claude call as runs recorded before MODEL_CALL name it."""
        return await self.call(request)

    @activity.defn(name=OFFLINE_MESSAGES)
    async def offline_messages(self, request: ModelRequest) -> ModelResponse:
        """An offline-model call as runs recorded before MODEL_CALL name it."""
        return await self.call(request)

    async def close(self) -> None:
        """Close every provider's client (once, when the worker stops)."""
        for provider in self._providers.values():
            await provider.close()


def not_configured(model: str) -> str:
    """Why this worker cannot call `model`, and what to set."""
    found = route(model)
    if found is None:
        return f"This worker cannot call {model!r}: {unroutable(model)}."
    offline = f"or use the offline model '{OFFLINE_MODEL}'"
    if found.provider == ANTHROPIC:
        return f"Model {model!r} needs ANTHROPIC_API_KEY on the worker; set it, {offline}."
    if found.provider == OPENAI:
        return (f"Model {model!r} needs OPENAI_API_KEY (or OPENAI_BASE_URL) on the worker; "
                f"set it, {offline}.")
    return (f"Model {model!r} needs the provider {found.provider!r}, which this worker does "
            f"not have: add {found.provider}=<base URL> to LOOPLLAMA_PROVIDERS on the worker "
            "(the API and every worker need the same setting).")
