"""Wires LoopLlama's workflows and activities into a Temporal worker.

Activities get their clients (Anthropic, SMTP, HTTP) from the worker's settings here, so
no secret ever travels through a workflow input or a Temporal history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.expected_failures import ExpectedFailures
from activities.registry import build_activities, model_activities
from core.contract import RUN_WORKFLOW_TYPE
from core.logs import StepContext, secret_values
from core.settings import Settings
from core.tracing import Tracing
from core.worker_metrics import RunFinishes
from workflows.registry import WORKFLOWS, workflow_runner


def build_worker(client: Client, settings: Settings, *, task_queue: str | None = None,
                 tracing: Tracing | None = None) -> Worker:
    """A worker for every LoopLlama workflow and activity on the configured task queue.

    With `tracing` (core/tracing.py), workflows and activities continue the caller's trace.
    """
    activities = build_activities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner(),
        activities=activities.activities,
        plugins=[activities.plugin()],
        interceptors=[
            # StepContext first (outermost), so every log line of a tool call has its step.
            StepContext(), ExpectedFailures(secret_values(settings)),
            RunFinishes(RUN_WORKFLOW_TYPE),
            *(tracing.worker_interceptors(client) if tracing else ()),
        ],
        # Give in-flight model calls a moment to finish on Ctrl-C; anything cut off is
        # retried by another worker (heartbeat timeouts notice within seconds).
        graceful_shutdown_timeout=timedelta(seconds=5),
        # Model and tool calls wait on the network: hold many at once (each costs a
        # task and a connection, tens of KB); workflow tasks keep their own slots.
        max_concurrent_activities=settings.worker_max_activities,
    )


def build_model_workers(client: Client, settings: Settings) -> list[Worker]:
    """One worker per rate-limited model, on the model's own task queue.

    Temporal's task-queue rate limit (`max_task_queue_activities_per_second`) holds the
    calls of every worker on that queue together to the model's rate, so a burst of runs
    waits its turn instead of meeting a storm of 429s.
    """
    workers = []
    for name, per_second in settings.model_rate_limits:
        queue = settings.model_task_queue(name)
        assert queue is not None
        activities = model_activities(settings)
        workers.append(Worker(
            client, task_queue=queue, activities=activities.activities,
            plugins=[activities.plugin()],
            max_task_queue_activities_per_second=per_second,
            max_activities_per_second=per_second,
            interceptors=[ExpectedFailures(secret_values(settings))],
            graceful_shutdown_timeout=timedelta(seconds=5),
        ))
    return workers
