"""Talking to workflows: reading what they publish, waiting for visibility, updates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.api.common.v1 import Payload
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, Unavailable

log = logging.getLogger("loopllama.api")

T = TypeVar("T")

# How long a change (a Temporal update) waits for a worker to apply it before 503.
UPDATE_TIMEOUT = timedelta(seconds=10)

# A newly started workflow shows up in list queries a few milliseconds later; creating
# calls wait for that (at most this long) so a list right after a create includes it.
VISIBILITY_WAIT_SECONDS = 2.0


async def describe_or_none(client: Client, workflow_id: str) -> WorkflowExecutionDescription | None:
    """The latest execution of `workflow_id`, or None when Temporal has none."""
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def list_page(client: Client, query: str, page_size: int, token: bytes = b"") -> tuple[
        Sequence[WorkflowExecutionInfo], bytes]:
    """One page of a visibility listing as raw rows, and the token of the next (empty
    after the last). Raw: the SDK's row objects decode every search attribute of every
    row, which costs more than the listing itself and fails on rows it cannot decode."""
    response = await client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(namespace=client.namespace, page_size=page_size,
                                      next_page_token=token, query=query),
        retry=True,
    )
    return response.executions, response.next_page_token


def left_out(workflow_id: str, reason: str) -> None:
    """Log a row a list leaves out because it cannot be read here.

    One unreadable row (another deployment's encryption key, a blob this process cannot
    reach, an execution started in Temporal by hand with a memo of its own) must not fail
    a whole list. The line names the row and why, never the memo's contents; the id is
    quoted, so a foreign id cannot forge log lines.
    """
    log.warning("Left %s out of a list: %s.", repr(workflow_id)[:120], reason)


async def decode_or_skip(client: Client, payload: Payload, workflow_id: str) -> Any:
    """A list row's memo value, or None when this process cannot decode it (logged by
    `left_out`)."""
    try:
        (value,) = await client.data_converter.decode([payload])
    except Exception as err:  # noqa: BLE001 - any undecodable row is skipped the same way
        left_out(workflow_id, f"its memo cannot be decoded here ({type(err).__name__})")
        return None
    return value


async def decode_rows(client: Client, entries: Sequence[tuple[str, Payload]]) -> list[Any]:
    """Each (workflow id, memo payload)'s decoded value, in one converter call when every
    payload decodes; None (logged) for each one that does not."""
    try:
        return list(await client.data_converter.decode([payload for _, payload in entries]))
    except Exception:  # noqa: BLE001 - find the undecodable rows one by one
        return [await decode_or_skip(client, payload, workflow_id)
                for workflow_id, payload in entries]


def is_running(description: WorkflowExecutionDescription) -> bool:
    """Whether the execution is still open."""
    return description.status == WorkflowExecutionStatus.RUNNING


async def wait_until_listed(
    client: Client, workflow_ids: Sequence[str], *, within: float = VISIBILITY_WAIT_SECONDS,
    first_look: float = 0.01,
) -> bool:
    """Whether list queries came to include every one of `workflow_ids` within `within`
    seconds (one count query per look, the first after `first_look`).

    Best effort: it runs after the starts succeeded, so a failure here must not turn a
    done deed into an error the caller would retry; it answers False instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    quoted = ", ".join(f"'{workflow_id}'" for workflow_id in workflow_ids)
    # Visibility trails a start by ~10 ms here and a count costs the server ~5 ms of CPU:
    # look first when it is likely there, so most waits ask once.
    delay = first_look
    while True:
        await asyncio.sleep(delay)
        try:
            found = await client.count_workflows(f"WorkflowId IN ({quoted})")
        except RPCError:
            return False
        if found.count >= len(workflow_ids):
            return True
        if loop.time() >= deadline:
            return False
        delay = min(max(delay * 2, 0.005), 0.05)


async def start_once(start: Awaitable[object]) -> None:
    """Start a workflow whose id may already have been used by the same request."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await start


async def apply_update(
    workflow_id: str,
    update: Awaitable[T],
    *,
    refusals: Mapping[str, Callable[[str], ApiError]],
    closed: ApiError,
) -> T:
    """Await an update, turning Temporal's outcomes into API errors.

    `refusals` maps the error types a validator raises to the API error for them (given
    the validator's message); `closed` is the answer when the execution has ended.
    """
    try:
        return await update
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise no_worker_applied(workflow_id) from None
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and (cause.type or "") in refusals:
            raise refusals[cause.type or ""](cause.message) from None
        raise
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise closed from None
        raise


def no_worker_applied(workflow_id: str) -> Unavailable:
    """The 503 for an update no worker took within `UPDATE_TIMEOUT`."""
    return Unavailable(
        f"No LoopLlama worker answered for {workflow_id!r} within "
        f"{UPDATE_TIMEOUT.total_seconds():.0f}s, so nothing is confirmed. Start one with "
        "`loopllama worker` (or `loopllama dev`); a change already sent still applies "
        "when a worker picks it up."
    )
