"""Names that cross process boundaries: workflow types, message names, error types and
activity names.

The API, the workers and the workflows all speak these names; keeping them here lets the
API start, query and update runs without importing workflow or activity modules (and,
through them, the Anthropic SDK or smtplib).
"""

from __future__ import annotations

# The Temporal workflow type of a run: the UI shows it, and the API's reads filter on it.
RUN_WORKFLOW_TYPE = "CrewRun"
# The run's update that takes a person's answer, and its query for the live state.
RESPOND_UPDATE = "respond"
GET_QUERY = "get"

# How a run that failed ends its Temporal execution.
FAILED_RUN = "RunFailed"
# Why a respond was refused; the API maps them to 409, 409 and 400.
NOT_WAITING = "RunNotWaiting"
STALE_ANSWER = "PauseAlreadyAnswered"
WRONG_ANSWER = "AnswerDoesNotFit"

# Error types a model call fails with, as the workflow and the Temporal UI see them.
MODEL_UNAVAILABLE = "ModelUnavailable"
MODEL_REJECTED = "ModelRequestRejected"
MODEL_NOT_CONFIGURED = "ModelNotConfigured"
# The model answered, but with a reply a run cannot take (nested past what Temporal's
# payloads carry, or not a reply at all): the same on every attempt, so never retried.
MODEL_REPLY_UNUSABLE = "ModelReplyUnusable"

# Activity names: the `@activity.defn(name=...)` of each activity, and what workflows
# schedule by name (workflows/activity_calls.py).
ANTHROPIC_MESSAGES = "anthropic_messages"
OFFLINE_MESSAGES = "offline_messages"
SEND_EMAIL = "send_email"
HTTP_REQUEST = "http_request"
CUSTOM_TOOL = "custom_tool"
# One model call, whatever the provider: the worker routes it by model name
# (activities/models/calls.py). Runs recorded before it name the two above instead.
MODEL_CALL = "model_call"
# An MCP server's tool (activities/mcp_tools.py).
MCP_TOOL = "mcp_tool"
# What `http_request` or a custom tool would refuse under the worker's allow-list and
# DNS, asked before a person is asked to approve the call.
TOOL_CHECK = "tool_check"
