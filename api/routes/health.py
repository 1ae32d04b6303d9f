"""Unauthenticated health check for load balancers and humans."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import RPCError

from api.deps import SettingsDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health", response_model=Health,
    responses={503: {"model": Health, "description": "Temporal is not reachable."}},
)
async def health(request: Request, settings: SettingsDep) -> JSONResponse:
    """200 when Temporal answers, 503 when it does not; says which either way."""
    client = request.app.state.temporal.client
    reachable = False
    if client is not None:
        try:
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=2)
            )
            reachable = True
        except RPCError:
            reachable = False
    body = {
        "status": "ok" if reachable else "degraded",
        "temporal": {
            "reachable": reachable,
            "namespace": settings.temporal_namespace,
            "task_queue": settings.temporal_task_queue,
        },
    }
    return JSONResponse(body, status_code=200 if reachable else 503)
