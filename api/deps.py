"""FastAPI dependencies: settings, the process's Temporal client, auth, services."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api.errors import TEMPORAL_UNREACHABLE, ApiError, Unavailable
from api.services.definitions import Definitions
from api.services.runs import Runs
from api.temporal_connection import TemporalConnection
from core.settings import Settings


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_client(request: Request) -> Client:
    """The one Temporal client of this process; 503 until it has connected."""
    connection: TemporalConnection = request.app.state.temporal
    if connection.client is None:
        raise Unavailable(TEMPORAL_UNREACHABLE)
    return connection.client


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """Accept `Authorization: Bearer <key>` for any configured key, in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "Missing API key. Send it as 'Authorization: Bearer <key>'.",
            headers=_UNAUTHORIZED,
        )
    presented = token.strip().encode()
    # Compare against every key (no early exit) so timing reveals neither match nor index.
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(presented, key.value.encode())
    if not matched:
        raise ApiError(
            401,
            "Invalid API key. Check LOOPLLAMA_API_KEY and send one of its keys as "
            "'Authorization: Bearer <key>'.",
            headers=_UNAUTHORIZED,
        )


def get_definitions(client: ClientDep, settings: SettingsDep) -> Definitions:
    """Crew definitions backed by this process's Temporal client."""
    return Definitions(client, settings.temporal_task_queue)


DefinitionsDep = Annotated[Definitions, Depends(get_definitions)]


def get_runs(client: ClientDep, settings: SettingsDep, definitions: DefinitionsDep) -> Runs:
    """Runs backed by this process's Temporal client."""
    return Runs(client, settings.temporal_task_queue, definitions)


RunsDep = Annotated[Runs, Depends(get_runs)]
