"""`/v1/workflows`: crew definitions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.body_guard import JsonBodyRoute
from api.deps import DefinitionsDep, IdempotencyKey
from api.schemas import (
    WebhookSecretEnvelope,
    WorkflowCreatedEnvelope,
    WorkflowDeletedEnvelope,
    WorkflowEnvelope,
    WorkflowListEnvelope,
    error_responses,
)
from core.types import WorkflowPatch, WorkflowSpec

router = APIRouter(prefix="/workflows", tags=["workflows"], route_class=JsonBodyRoute)


def _data(payload: object, status_code: int = 200) -> JSONResponse:
    return JSONResponse({"data": payload}, status_code=status_code)


# Every body is checked (400) and may be over the size limit (413).
_WITH_BODY = (400, 413)


@router.post("", status_code=201, response_model=WorkflowCreatedEnvelope,
             responses=error_responses(*_WITH_BODY, 409))
async def create_workflow(
    body: WorkflowSpec, definitions: DefinitionsDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Create a crew definition.

    Send an `Idempotency-Key` header to make retries safe: a repeat returns the same
    workflow.
    """
    created = await definitions.create(body, idempotency_key)
    secret = definitions.webhook_secret(created.id)
    extra = {"webhook_secret": secret} if secret is not None else {}
    return _data({**created.model_dump(mode="json"), **extra}, 201)


@router.get("", response_model=WorkflowListEnvelope, responses=error_responses())
async def list_workflows(definitions: DefinitionsDep) -> JSONResponse:
    """Every workflow, newest first."""
    return _data([d.model_dump(mode="json") for d in await definitions.list()])


@router.get("/{workflow_id}", response_model=WorkflowEnvelope, responses=error_responses(404))
async def get_workflow(workflow_id: str, definitions: DefinitionsDep) -> JSONResponse:
    """One workflow."""
    return _data((await definitions.get(workflow_id)).model_dump(mode="json"))


@router.patch("/{workflow_id}", response_model=WorkflowEnvelope,
              responses=error_responses(*_WITH_BODY, 404))
async def update_workflow(
    workflow_id: str, body: WorkflowPatch, definitions: DefinitionsDep
) -> JSONResponse:
    """Change name, description, crew or human-in-the-loop settings."""
    return _data((await definitions.change(workflow_id, body)).model_dump(mode="json"))


@router.delete("/{workflow_id}", response_model=WorkflowDeletedEnvelope,
               responses=error_responses(404))
async def delete_workflow(workflow_id: str, definitions: DefinitionsDep) -> JSONResponse:
    """Delete a workflow; its runs stay readable."""
    await definitions.delete(workflow_id)
    return _data({"id": workflow_id, "deleted": True})


@router.post("/{workflow_id}/pause", response_model=WorkflowEnvelope,
             responses=error_responses(404))
async def pause_workflow(workflow_id: str, definitions: DefinitionsDep) -> JSONResponse:
    """Refuse new runs (409) until resumed; running runs go on."""
    return _data((await definitions.set_status(workflow_id, "paused")).model_dump(mode="json"))


@router.post("/{workflow_id}/resume", response_model=WorkflowEnvelope,
             responses=error_responses(404))
async def resume_workflow(workflow_id: str, definitions: DefinitionsDep) -> JSONResponse:
    """Accept new runs again."""
    return _data((await definitions.set_status(workflow_id, "active")).model_dump(mode="json"))


@router.post("/{workflow_id}/webhook-secret", response_model=WebhookSecretEnvelope,
             responses=error_responses(400, 404))
async def rotate_webhook_secret(workflow_id: str, definitions: DefinitionsDep) -> JSONResponse:
    """Replace the workflow's webhook signing secret and return the new one (shown only
    here); deliveries are signed with it from now on."""
    secret = await definitions.rotate_webhook_secret(workflow_id)
    return _data({"webhook_secret": secret})
