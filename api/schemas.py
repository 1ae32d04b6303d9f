"""Response envelopes as the OpenAPI schema describes them.

Routes answer with hand-built `JSONResponse`s (the exact shapes of the reference);
these models only tell `/openapi.json` what those bodies are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.types import RespondAccepted, Run, RunSummary


class ErrorBody(BaseModel):
    """What went wrong and what to send instead."""

    type: str
    message: str


class ErrorEnvelope(BaseModel):
    """Every error: `{"error": {"type", "message"}}`."""

    error: ErrorBody


class RunEnvelope(BaseModel):
    """`{"data": run}`, steps included."""

    data: Run


class RunSummaryEnvelope(BaseModel):
    """`{"data": run}` without steps."""

    data: RunSummary


class RunListEnvelope(BaseModel):
    """`{"data": [run, ...]}` without steps, newest first."""

    data: list[RunSummary]


class RespondEnvelope(BaseModel):
    """`{"data": {"id", "status"}}`."""

    data: RespondAccepted


_MEANINGS = {
    400: "The request is invalid; the message says what to send instead.",
    401: "Missing or wrong API key.",
    404: "No such resource.",
    409: "The resource is not in a state that allows this.",
    503: "Temporal, or a worker, did not answer in time; nothing was confirmed.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer."""
    return {
        status: {"model": ErrorEnvelope, "description": _MEANINGS[status]}
        for status in (401, *statuses, 503)
    }
