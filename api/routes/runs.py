"""Runs: `/v1/workflows/{id}/runs` and `/v1/runs/{id}`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse

from api.body_guard import JsonBodyRoute
from api.deps import EventHubDep, IdempotencyKey, RunsDep
from api.errors import BadRequest
from api.schemas import (
    RespondEnvelope,
    RunEnvelope,
    RunListEnvelope,
    RunSummaryEnvelope,
    error_responses,
)
from core.types import ForkRequest, RespondRequest, TriggerRequest

router = APIRouter(tags=["runs"], route_class=JsonBodyRoute)


@router.post(
    "/workflows/{workflow_id}/runs", status_code=202, response_model=RunSummaryEnvelope,
    responses=error_responses(400, 404, 409, 413),
)
async def trigger_run(
    workflow_id: str, body: TriggerRequest, runs: RunsDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Queue a run; 202 with the run in `queued`.

    Send an `Idempotency-Key` header to make retries safe: a repeat returns the same run.
    """
    run = await runs.trigger(workflow_id, body, idempotency_key)
    return JSONResponse({"data": run.summary()}, status_code=202)


@router.get(
    "/workflows/{workflow_id}/runs", response_model=RunListEnvelope,
    responses=error_responses(404),
)
async def list_runs(workflow_id: str, runs: RunsDep) -> JSONResponse:
    """The 50 most recent runs, newest first, without steps."""
    return JSONResponse({"data": [run.summary() for run in await runs.list(workflow_id)]})


@router.get("/runs/{run_id}", response_model=RunEnvelope, responses=error_responses(404))
async def get_run(run_id: str, runs: RunsDep) -> JSONResponse:
    """One run with its ordered steps."""
    return JSONResponse({"data": (await runs.get(run_id)).detail()})


@router.post(
    "/runs/{run_id}/respond", status_code=202, response_model=RespondEnvelope,
    responses=error_responses(400, 404, 409, 413),
)
async def respond_to_run(run_id: str, body: RespondRequest, runs: RunsDep) -> JSONResponse:
    """Answer a paused run's question or approval; 202 and the run resumes.

    `pause_id` (an extension) names the pause answered: 409 once that pause was answered.
    """
    accepted = await runs.respond(run_id, body)
    return JSONResponse({"data": accepted.model_dump(mode="json")}, status_code=202)


@router.post(
    "/runs/{run_id}/cancel", status_code=202, response_model=RunSummaryEnvelope,
    responses=error_responses(404, 409),
)
async def cancel_run(run_id: str, runs: RunsDep) -> JSONResponse:
    """Cancel a run that has not ended (an extension); 202 with the run, `cancelled`
    once the worker has stopped it. 409 when the run has already ended."""
    return JSONResponse({"data": (await runs.cancel(run_id)).summary()}, status_code=202)


@router.post(
    "/runs/{run_id}/retry", status_code=202, response_model=RunSummaryEnvelope,
    responses=error_responses(404, 409),
)
async def retry_run(run_id: str, runs: RunsDep) -> JSONResponse:
    """Go on with a failed run from its failed step (an extension); earlier steps keep
    their outputs and are not called again. 409 unless the run is `failed`."""
    return JSONResponse({"data": (await runs.retry(run_id)).summary()}, status_code=202)


@router.post(
    "/runs/{run_id}/fork", status_code=202, response_model=RunSummaryEnvelope,
    responses=error_responses(400, 404, 409, 413),
)
async def fork_run(run_id: str, body: ForkRequest, runs: RunsDep) -> JSONResponse:
    """Start a new run of an ended run's crew again from one step (an extension), with
    edits: steps the edits do not touch are reused, not run. 202 with the new run,
    `queued`; 409 unless the source has ended."""
    return JSONResponse({"data": (await runs.fork(run_id, body)).summary()}, status_code=202)


# A comment line this often keeps proxies and clients from timing out an idle stream.
KEEPALIVE_SECONDS = 10.0
# Event ids are 1, 2, 3, ... per run: 18 digits is more than any run reaches.
_EVENT_ID = re.compile(r"[0-9]{1,18}")


def _event_id(header: str) -> int:
    """The event id a `Last-Event-ID` header names, or 400 saying what to send."""
    value = header.strip()
    if _EVENT_ID.fullmatch(value) is None:
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise BadRequest(
            "Last-Event-ID must be the id of an event of this run as the stream sent it: "
            f"digits 0-9 only, at most 18 of them, such as '12'; got {shown!r}. Leave the "
            "header out to replay the run from its first event."
        )
    return int(value)


@router.get(
    "/runs/{run_id}/events", response_class=StreamingResponse,
    responses={
        200: {"description": "Server-Sent Events: every event of the run, then live ones "
                             "until its end.",
              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **error_responses(400, 404),
    },
)
async def run_events(
    run_id: str, runs: RunsDep, hub: EventHubDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """The run's events as Server-Sent Events (an extension): `id` 1, 2, 3, ... per run,
    `event` the type, `data` `{"type", "run_id", "created_at", "data"}`. Replays from
    the start, or after `Last-Event-ID`, then follows live; closes after the run's end.
    """
    after = 0
    if last_event_id is not None:
        after = _event_id(last_event_id)
    execution = await runs.current_execution(run_id)

    async def stream() -> AsyncIterator[str]:
        async for event in hub.watch(run_id, execution, after, KEEPALIVE_SECONDS):
            yield ": keep-alive\n\n" if event is None else event.sse()

    return StreamingResponse(
        stream(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
