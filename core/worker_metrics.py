"""What a worker measures, all through the Temporal SDK's own metrics.

With `LOOPLLAMA_WORKER_METRICS_PORT` set, the worker's SDK `Runtime` serves Prometheus
text at `http://<LOOPLLAMA_WORKER_METRICS_HOST>:<port>/metrics`: the SDK's own metrics
(`temporal_workflow_completed`, `temporal_activity_execution_latency`, poller and slot
gauges, ... unchanged) and LoopLlama's, recorded on the SDK's meter so they land on the
same endpoint:

- `loopllama_runs_finished_total{status}`: runs this worker finished (completed,
  failed, cancelled). Counted by a workflow interceptor with `workflow.metric_meter()`,
  which records nothing while a workflow replays, so a run is counted once, by the
  worker that finished it, however often it was replayed. Runs terminated or timed out
  from Temporal run no workflow code and are not counted (the API reads them `failed`).
- `loopllama_model_call_latency{model,outcome}` (ms, like the SDK's latencies),
  `loopllama_model_call_errors_total{model,error_class}` (the failure's type as the run
  sees it, the same for every provider: `ModelUnavailable`, `ModelRequestRejected`,
  `ModelNotConfigured`, `ModelReplyUnusable`) and `loopllama_model_tokens_total{model,kind}`
  from the model-call activity, `model` as the agent names it (`openai/gpt-4.1`).

Unset, the worker serves nothing and every record is a no-op.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import FailureError, is_cancelled_exception
from temporalio.runtime import LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from core.logs import core_logging
from core.settings import Settings

RUNS_FINISHED = "loopllama_runs_finished_total"
MODEL_CALL_LATENCY = "loopllama_model_call_latency"
MODEL_CALL_ERRORS = "loopllama_model_call_errors_total"
MODEL_TOKENS = "loopllama_model_tokens_total"
# Model calls take from a fraction of a second to minutes (ms, the SDK's default unit).
MODEL_LATENCY_BUCKETS_MS = (250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000,
                            300_000, 600_000)
# Label values come from crew definitions; an absurdly long name is cut, not stored whole.
_MAX_LABEL = 100


def sdk_runtime(settings: Settings, *, serve_metrics: bool) -> Runtime | None:
    """This process's Temporal SDK runtime, or None when the SDK's default will do.

    `serve_metrics` (workers) starts the Prometheus endpoint when configured; JSON logs
    forward the SDK Core's own log lines into Python logging (core/logs.py).
    """
    address = settings.worker_metrics_address if serve_metrics else None
    logging_config = core_logging(settings)
    if address is None and logging_config is None:
        return None
    metrics = None
    if address is not None:
        metrics = PrometheusConfig(
            bind_address=address,
            histogram_bucket_overrides={MODEL_CALL_LATENCY: MODEL_LATENCY_BUCKETS_MS},
        )
    return Runtime(telemetry=TelemetryConfig(
        metrics=metrics, logging=logging_config or LoggingConfig.default
    ))


class RunFinishes(Interceptor):
    """Worker interceptor: count each run of `workflow_type` that ends, by status."""

    def __init__(self, workflow_type: str) -> None:
        self.workflow_type = workflow_type

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        """Count runs; leave every other workflow alone."""
        workflow_type = self.workflow_type

        class _CountFinish(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                if workflow.info().workflow_type != workflow_type:
                    return await super().execute_workflow(input)
                try:
                    result = await super().execute_workflow(input)
                except asyncio.CancelledError:
                    _count_finish("cancelled")
                    raise
                except Exception as err:
                    # A FailureError fails the execution; anything else (nondeterminism,
                    # a bug) fails only the workflow task, and the run goes on later.
                    if is_cancelled_exception(err):
                        _count_finish("cancelled")
                    elif isinstance(err, FailureError):
                        _count_finish("failed")
                    raise
                _count_finish("completed")
                return result

        return _CountFinish


def _count_finish(status: str) -> None:
    # The workflow meter records nothing during replay: one count per finished run.
    workflow.metric_meter().create_counter(
        RUNS_FINISHED, "Runs this worker finished, by status."
    ).add(1, {"status": status})


def record_model_call(
    model: str,
    started: float | None,
    *,
    tokens: dict[str, int] | None = None,
    error_class: str | None = None,
) -> None:
    """Record one model call (an activity attempt): its latency, tokens or error class.

    `started` is the call's `time.monotonic()` start; None for a call that never went
    out (e.g. no key configured), which counts as an error but has no latency.
    `tokens` maps a kind (input, output, cache_read, cache_write) to a count; input
    counts every input token the model read, as steps report `tokens_in`.
    """
    if not activity.in_activity():
        return
    meter = activity.metric_meter()
    labels = {"model": model[:_MAX_LABEL]}
    if started is not None:
        meter.create_histogram_timedelta(
            MODEL_CALL_LATENCY, "Model call latency (one activity attempt).", "duration"
        ).record(timedelta(seconds=time.monotonic() - started),
                 {**labels, "outcome": "error" if error_class else "ok"})
    if error_class is not None:
        meter.create_counter(
            MODEL_CALL_ERRORS, "Model calls that failed, by error class."
        ).add(1, {**labels, "error_class": error_class[:_MAX_LABEL]})
    counter = meter.create_counter(MODEL_TOKENS, "Model tokens, by model and kind.")
    for kind, count in (tokens or {}).items():
        if count:
            counter.add(count, {**labels, "kind": kind})
