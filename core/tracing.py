"""OpenTelemetry traces over OTLP/HTTP, when the standard OTEL_* variables ask for them.

One trace follows a request from the API's HTTP span through Temporal (the
`StartWorkflow` span, the workflow's `RunWorkflow` and `StartActivity` spans) to every
model and tool call (`RunActivity` spans), using `temporalio.contrib.opentelemetry`:
its `TracingInterceptor` carries the span context in Temporal headers, so it crosses
from the API process to whichever worker runs the workflow and its activities. Spans
carry LoopLlama's ids (`loopllama.run_id`, `loopllama.workflow_id`); model spans add the
model and token counts (`annotate_model_call`, `annotate_model_usage`).

Nothing here imports the OpenTelemetry SDK, nor the Temporal and FastAPI integrations,
unless tracing is on: `start_tracing` returns None without touching them, and
`annotate_*` return at once while no span is recording.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import temporalio.client
import temporalio.worker
from temporalio import activity
from temporalio.common import TypedSearchAttributes

from core.ids import RUN_PREFIX, WORKFLOW_PREFIX, looks_like
from core.settings import Settings
from core.temporal import SA_WORKFLOW_ID

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from core.types import ModelResponse

API_SERVICE = "loopllama-api"
WORKER_SERVICE = "loopllama-worker"

AttributeValue = str | int | float | bool
# The id in /v1/workflows/{workflow_id}... and /v1/runs/{run_id}...
_RESOURCE_PATH = re.compile(r"^/v1/(?:workflows|runs)/([^/]+)")


class Tracing:
    """One process's tracer provider, and what plugs it into Temporal and FastAPI."""

    def __init__(self, provider: TracerProvider) -> None:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        self.provider = provider
        self._tracing = TracingInterceptor(provider.get_tracer("temporalio"))
        # After the tracing interceptor, so its span is the current one when ids are set.
        self._interceptors = (self._tracing, _LoopLlamaIds())

    def client_interceptors(self) -> list[temporalio.client.Interceptor]:
        """For `Client.connect`: spans for client calls, their context in the headers."""
        return list(self._interceptors)

    def worker_interceptors(
        self, client: temporalio.client.Client
    ) -> list[temporalio.worker.Interceptor]:
        """For a worker on `client`: workflow and activity spans.

        Empty when the client already traces: a worker inherits its client's interceptors.
        """
        if any(isinstance(i, type(self._tracing)) for i in client.config()["interceptors"]):
            return []
        return list(self._interceptors)

    def instrument_app(self, app: FastAPI) -> None:
        """One server span per HTTP request, named after the route, with the ids in its path."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        def name_ids(span: Span | None, scope: dict[str, Any]) -> None:
            if span is not None and span.is_recording():
                span.set_attributes(_path_ids(scope.get("path", "")))

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, server_request_hook=name_ids,
            # Health checks and scrapes would drown the traces worth reading.
            excluded_urls="/health$,/metrics$",
            # Not a span per ASGI message sent or received: one per request is enough.
            exclude_spans=["receive", "send"],
        )

    def shutdown(self) -> None:
        """Export what is still queued (blocks up to the exporter's timeout), then stop."""
        self.provider.shutdown()


def start_tracing(settings: Settings, service: str) -> Tracing | None:
    """A tracer provider exporting over OTLP/HTTP, or None when OTEL_* leave tracing off.

    `service` names the process (OTEL_SERVICE_NAME wins). Other standard variables
    (OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ..._COMPRESSION, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_TRACES_SAMPLER, OTEL_BSP_*) are read by the OpenTelemetry SDK itself.
    """
    if settings.otel_traces_endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name or service})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_traces_endpoint))
    )
    return Tracing(provider)


@asynccontextmanager
async def tracing_for(settings: Settings, service: str) -> AsyncIterator[Tracing | None]:
    """`start_tracing` for the length of a process, flushing its spans on the way out."""
    tracing = start_tracing(settings, service)
    try:
        yield tracing
    finally:
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)


def annotate_span(attributes: Mapping[str, AttributeValue]) -> None:
    """Set attributes on the current span; nothing when tracing is off."""
    span = _recording_span()
    if span is not None:
        span.set_attributes(attributes)


def annotate_model_call(provider: str, model: str) -> None:
    """The model an activity calls, on its span (set first, so failed attempts show it)."""
    annotate_span({
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    })


def annotate_model_usage(response: ModelResponse) -> None:
    """A model call's token counts, in OpenTelemetry's GenAI names. `input_tokens` counts
    every input token read, cached or not, like a step's `tokens_in`."""
    span = _recording_span()
    if span is None:
        return
    span.set_attributes({
        "gen_ai.usage.input_tokens": response.tokens_in,
        "gen_ai.usage.output_tokens": response.tokens_out,
        "gen_ai.usage.cache_read.input_tokens": response.tokens_in_cached,
        "gen_ai.usage.cache_creation.input_tokens": response.tokens_in_cache_write,
    })
    if response.stop_reason:
        span.set_attribute("gen_ai.response.finish_reasons", [response.stop_reason])


def _recording_span() -> Span | None:
    # The OpenTelemetry API (not the SDK) may be loaded anyway (FastAPI imports it); if
    # it is not, no span can be current and this imports nothing.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span: Span = trace.get_current_span()
    return span if span.is_recording() else None


def _ids(temporal_id: str) -> dict[str, AttributeValue]:
    """LoopLlama's name for a Temporal workflow id: a run's, or a crew definition's."""
    if looks_like(RUN_PREFIX, temporal_id):
        return {"loopllama.run_id": temporal_id}
    if looks_like(WORKFLOW_PREFIX, temporal_id):
        return {"loopllama.workflow_id": temporal_id}
    return {}


def _path_ids(path: str) -> dict[str, AttributeValue]:
    match = _RESOURCE_PATH.match(path)
    return _ids(match.group(1)) if match else {}


class _LoopLlamaIds(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Puts LoopLlama's ids on the spans `TracingInterceptor` opened just outside it."""

    def intercept_client(
        self, next: temporalio.client.OutboundInterceptor
    ) -> temporalio.client.OutboundInterceptor:
        return _StartIds(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityIds(next)


class _StartIds(temporalio.client.OutboundInterceptor):
    async def start_workflow(
        self, input: temporalio.client.StartWorkflowInput
    ) -> temporalio.client.WorkflowHandle[Any, Any]:
        attributes = _ids(input.id)
        if isinstance(input.search_attributes, TypedSearchAttributes):
            crew = input.search_attributes.get(SA_WORKFLOW_ID)
            if crew is not None:  # a run names its crew definition
                attributes["loopllama.workflow_id"] = crew
        annotate_span(attributes)
        return await super().start_workflow(input)


class _ActivityIds(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        info = activity.info()
        annotate_span({**_ids(info.workflow_id or ""), "loopllama.attempt": info.attempt})
        return await super().execute_activity(input)
