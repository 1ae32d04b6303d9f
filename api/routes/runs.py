"""Runs: `/v1/workflows/{id}/runs` and `/v1/runs/{id}`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import IdempotencyKey, RunsDep
from api.schemas import (
    RespondEnvelope,
    RunEnvelope,
    RunListEnvelope,
    RunSummaryEnvelope,
    error_responses,
)
from core.types import RespondRequest, TriggerRequest

router = APIRouter(tags=["runs"])


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
