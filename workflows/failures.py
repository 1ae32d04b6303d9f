"""How a step fails: the exception the run engine handles, and activity failures in
words a user can act on."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from core.contract import MODEL_NOT_CONFIGURED, MODEL_REJECTED


class StepFailed(Exception):
    """An agent's step could not finish; the message is for the user.

    `restart`: a retry of the run runs this step again from its input instead of going
    on from its tool loop (which would only fail the same way).
    """

    def __init__(self, message: str, *, restart: bool = False) -> None:
        super().__init__(message)
        self.restart = restart


def describe_activity_failure(err: ActivityError, what: str) -> str:
    """Why a model or tool call failed, for the step's error or the agent."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        if cause.non_retryable or cause.type in (MODEL_REJECTED, MODEL_NOT_CONFIGURED):
            return cause.message
        return f"{cause.message} (gave up after repeated retries)"
    if isinstance(cause, TimeoutError):
        return f"the {what} call timed out"
    return str(cause or err)
