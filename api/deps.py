"""FastAPI dependencies: settings, the process's Temporal client, services.

All `async def`: FastAPI runs plain `def` dependencies in its thread pool, which costs
more than these trivial lookups.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from api.errors import TEMPORAL_UNREACHABLE, Unavailable
from api.services.definitions import Definitions
from api.services.recent_runs import RecentRuns
from api.services.run_events import RunEventHub, RunEventSource
from api.services.runs import Runs
from api.temporal_connection import TemporalConnection
from core.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_client(request: Request) -> Client:
    """The one Temporal client of this process; 503 until it has connected."""
    connection: TemporalConnection = request.app.state.temporal
    if connection.client is None:
        raise Unavailable(TEMPORAL_UNREACHABLE)
    return connection.client


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]

async def get_definitions(client: ClientDep, settings: SettingsDep) -> Definitions:
    """Crew definitions backed by this process's Temporal client."""
    return Definitions(client, settings.temporal_task_queue,
                       allowlist=settings.http_allowlist, webhook_key=settings.webhook_key,
                       model_problem=settings.model_problem)


DefinitionsDep = Annotated[Definitions, Depends(get_definitions)]


async def get_runs(request: Request, client: ClientDep, settings: SettingsDep,
                   definitions: DefinitionsDep) -> Runs:
    """Runs backed by this process's Temporal client."""
    recent: RecentRuns = request.app.state.recent_runs
    return Runs(client, settings, definitions, recent)


RunsDep = Annotated[Runs, Depends(get_runs)]


async def get_event_hub(request: Request, client: ClientDep) -> RunEventHub:
    """This process's fan-out of run events (made with its Temporal client on first use)."""
    hub: RunEventHub | None = request.app.state.run_event_hub
    if hub is None:
        hub = RunEventHub(RunEventSource(client))
        request.app.state.run_event_hub = hub
    return hub


EventHubDep = Annotated[RunEventHub, Depends(get_event_hub)]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
        description="Makes a create or trigger safe to retry: a repeat with the same key "
        "returns what the first request created.",
    ),
]
