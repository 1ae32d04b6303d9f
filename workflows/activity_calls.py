"""The activities a run schedules, as typed references with their options.

A run names activities (core/contract.py) instead of importing them, so workflow code
never loads the Anthropic SDK, smtplib or httpx, and each call site gets its input and
result types checked. Timeouts and retry policies live beside the reference they govern.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        ANTHROPIC_MESSAGES,
        CUSTOM_TOOL,
        HTTP_REQUEST,
        MCP_TOOL,
        MODEL_CALL,
        MODEL_NOT_CONFIGURED,
        MODEL_REJECTED,
        MODEL_REPLY_UNUSABLE,
        OFFLINE_MESSAGES,
        SEND_EMAIL,
        TOOL_CHECK,
    )
    from core.mcp_names import mcp_tool_parts
    from core.model_routing import OFFLINE_MODEL
    from core.types import ModelRequest, ModelResponse, ToolCall, ToolCheck, ToolResult

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class CallOptions:
    """How long one call may take, how it proves it is alive, and how it is retried."""

    start_to_close: timedelta
    heartbeat: timedelta
    retry: RetryPolicy


# A model call may legitimately take minutes, but a dead worker must be noticed within
# seconds: the activity heartbeats every 2 s, so 10 s of silence means it is gone.
MODEL_CALL_OPTIONS = CallOptions(
    start_to_close=timedelta(minutes=10),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=10,
        non_retryable_error_types=[MODEL_REJECTED, MODEL_NOT_CONFIGURED, MODEL_REPLY_UNUSABLE],
    ),
)
# Tool calls act on the world: a few retries for passing failures (with the same
# idempotency key), then the failure goes back to the agent as the tool's result.
TOOL_CALL = CallOptions(
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=10),
    retry=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
    ),
)

# An MCP server's tool may take up to its client's 120 s timeout to answer.
MCP_CALL_OPTIONS = CallOptions(
    start_to_close=timedelta(minutes=3),
    heartbeat=TOOL_CALL.heartbeat,
    retry=TOOL_CALL.retry,
)

# A tool's check resolves a host at most: seconds. It does not heartbeat.
TOOL_CHECK_OPTIONS = CallOptions(
    start_to_close=timedelta(seconds=30),
    heartbeat=timedelta(seconds=30),
    retry=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
)


@dataclass(frozen=True)
class ActivityRef(Generic[In, Out]):
    """One activity by name, with the type it answers with and its call options."""

    name: str
    result_type: type[Out]
    options: CallOptions

    async def execute(self, arg: In, *, summary: str, task_queue: str | None = None) -> Out:
        """Schedule the activity and wait for its result (raises `ActivityError`)."""
        return await workflow.execute_activity(
            self.name,
            arg,
            result_type=self.result_type,
            start_to_close_timeout=self.options.start_to_close,
            heartbeat_timeout=self.options.heartbeat,
            retry_policy=self.options.retry,
            summary=summary,
            task_queue=task_queue,
        )


# Runs schedule every model call as MODEL_CALL, which the worker routes by model name;
# runs recorded before it (the `one-model-call` patch) named one activity per provider.
MODEL: ActivityRef[ModelRequest, ModelResponse] = ActivityRef(
    MODEL_CALL, ModelResponse, MODEL_CALL_OPTIONS)
CLAUDE: ActivityRef[ModelRequest, ModelResponse] = ActivityRef(
    ANTHROPIC_MESSAGES, ModelResponse, MODEL_CALL_OPTIONS)
OFFLINE: ActivityRef[ModelRequest, ModelResponse] = ActivityRef(
    OFFLINE_MESSAGES, ModelResponse, MODEL_CALL_OPTIONS)
EMAIL: ActivityRef[ToolCall, ToolResult] = ActivityRef(SEND_EMAIL, ToolResult, TOOL_CALL)
HTTP: ActivityRef[ToolCall, ToolResult] = ActivityRef(HTTP_REQUEST, ToolResult, TOOL_CALL)
CUSTOM: ActivityRef[ToolCall, ToolResult] = ActivityRef(CUSTOM_TOOL, ToolResult, TOOL_CALL)
MCP: ActivityRef[ToolCall, ToolResult] = ActivityRef(MCP_TOOL, ToolResult, MCP_CALL_OPTIONS)
TOOL_CHECKS: ActivityRef[ToolCall, ToolCheck] = ActivityRef(
    TOOL_CHECK, ToolCheck, TOOL_CHECK_OPTIONS)

# Set in runs whose model calls are all MODEL_CALL.
ONE_MODEL_CALL = "one-model-call"


def model_call(model: str) -> ActivityRef[ModelRequest, ModelResponse]:
    """The activity that serves `model`: MODEL_CALL, or in runs recorded before it, the
    provider's own (Claude's or the offline model's)."""
    if workflow.patched(ONE_MODEL_CALL):
        return MODEL
    return OFFLINE if model == OFFLINE_MODEL else CLAUDE


def tool_call(name: str) -> ActivityRef[ToolCall, ToolResult]:
    """The activity that runs the tool `name` (a built-in, an MCP server's tool, else a
    custom HTTP tool)."""
    if name == SEND_EMAIL:
        return EMAIL
    if name == HTTP_REQUEST:
        return HTTP
    return MCP if mcp_tool_parts(name) is not None else CUSTOM
