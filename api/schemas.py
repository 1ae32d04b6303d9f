"""Response envelopes as the OpenAPI schema describes them.

Routes answer with hand-built `JSONResponse`s (the exact shapes of the reference);
these models only tell `/openapi.json` what those bodies are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.types import RespondAccepted, Run, RunSummary, Workflow


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


class WorkflowEnvelope(BaseModel):
    """`{"data": workflow}`."""

    data: Workflow


class WorkflowCreated(Workflow):
    """The workflow as created, with its webhook signing secret: shown this once (and
    on rotation), never by GET. Absent when the server has no LOOPLLAMA_WEBHOOK_KEY."""

    webhook_secret: str | None = None


class WorkflowCreatedEnvelope(BaseModel):
    """`{"data": workflow + webhook_secret}`."""

    data: WorkflowCreated


class WebhookSecret(BaseModel):
    """A new webhook signing secret (`whsec_` + base64 of 32 bytes)."""

    webhook_secret: str


class WebhookSecretEnvelope(BaseModel):
    """`{"data": {"webhook_secret"}}`."""

    data: WebhookSecret


class WorkflowListEnvelope(BaseModel):
    """`{"data": [workflow, ...]}`, newest first."""

    data: list[Workflow]


class WorkflowDeleted(BaseModel):
    """What `DELETE /v1/workflows/{id}` answers."""

    id: str
    deleted: bool


class WorkflowDeletedEnvelope(BaseModel):
    """`{"data": {"id", "deleted": true}}`."""

    data: WorkflowDeleted


class TemporalHealth(BaseModel):
    """Whether this API process reaches Temporal, and where it looks."""

    reachable: bool
    namespace: str
    task_queue: str


class Health(BaseModel):
    """`GET /health`: `ok` (200) or `degraded` (503)."""

    status: str
    temporal: TemporalHealth


_MEANINGS = {
    400: "The request is invalid; the message says what to send instead.",
    401: "Missing or wrong API key.",
    404: "No such resource.",
    409: "The resource is not in a state that allows this.",
    413: "The request body is over 1 MiB.",
    503: "Temporal, or a worker, did not answer in time; nothing was confirmed.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a `/v1` route can answer
    (besides these, every one may answer 401 and 503)."""
    return {
        status: {"model": ErrorEnvelope, "description": _MEANINGS[status]}
        for status in sorted({401, *statuses, 503})
    }
