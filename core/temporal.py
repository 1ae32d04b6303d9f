"""Connecting to Temporal and making sure a namespace has what LoopLlama needs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    RegisterNamespaceRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client, Interceptor, PayloadLimitsConfig
from temporalio.common import SearchAttributeKey
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCError, RPCStatusCode, TLSConfig

from core.converter import data_converter, offloading_everything
from core.settings import DEFAULT_RETENTION_DAYS, Settings

# Search attributes that make runs filterable in the Temporal UI and listable by the API.
SA_WORKFLOW_ID = SearchAttributeKey.for_keyword("LoopLlamaWorkflowId")
SA_STATUS = SearchAttributeKey.for_keyword("LoopLlamaStatus")
SA_CREATED_AT = SearchAttributeKey.for_datetime("LoopLlamaCreatedAt")
# The crew's name on every run, so the UI's list can show and filter runs by crew.
SA_CREW = SearchAttributeKey.for_keyword("LoopLlamaCrew")
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey, ...] = (
    SA_WORKFLOW_ID, SA_STATUS, SA_CREATED_AT, SA_CREW,
)

# How long Temporal keeps closed runs (and deleted definitions) before purging them.
DEFAULT_RETENTION = timedelta(days=DEFAULT_RETENTION_DAYS)


class TemporalSetupError(RuntimeError):
    """The Temporal server lacks something LoopLlama needs and it could not be added."""


def search_attribute_flags() -> list[str]:
    """`--search-attribute` arguments for `temporal server start-dev`."""
    return [
        f"--search-attribute={key.name}={key.indexed_value_type.name.title()}"
        for key in SEARCH_ATTRIBUTES
    ]


# The API answers a caller while it waits: during a Temporal outage it should say 503
# within a few seconds rather than retry for the SDK's default ten.
API_RETRY = RetryConfig(max_interval_millis=1000, max_elapsed_time_millis=3000)
# Runs publish their whole state in the memo on purpose (reads need no replay); the
# server's limit is 2 MiB, so only warn well above the SDK's 2 KiB default.
MEMO_WARN_BYTES = 512 * 1024


async def connect(
    address: str, namespace: str, *, blob_dir: Path, retry: RetryConfig | None = None,
    encryption_keys: Sequence[bytes] = (), interceptors: Sequence[Interceptor] = (),
    runtime: Runtime | None = None, tls: TLSConfig | bool = False, api_key: str | None = None,
) -> Client:
    """A client that speaks pydantic models, keeps large payloads in `blob_dir` and
    encrypts payloads with `encryption_keys` (if any), as every LoopLlama process does.
    `tls` and `api_key` reach a TLS cluster or Temporal Cloud."""
    return await Client.connect(
        address,
        namespace=namespace,
        tls=tls,
        api_key=api_key,
        data_converter=data_converter(blob_dir, encryption_keys),
        # Tracing (core/tracing.py), when OTEL_* turn it on.
        interceptors=interceptors,
        retry_config=retry,
        payload_limits=PayloadLimitsConfig(memo_warn_size=MEMO_WARN_BYTES),
        # The worker's, serving its metrics (core/worker_metrics.py); None: the default.
        runtime=runtime,
    )


async def connect_as(settings: Settings, address: str, *, retry: RetryConfig | None = None,
                     interceptors: Sequence[Interceptor] = (),
                     runtime: Runtime | None = None) -> Client:
    """`connect` with everything else from `settings` (namespace, blob store, keys, TLS
    and Temporal Cloud credentials)."""
    return await connect(address, settings.temporal_namespace, blob_dir=settings.blob_dir,
                         encryption_keys=settings.encryption_key_bytes, retry=retry,
                         interceptors=interceptors, runtime=runtime, tls=tls_config(settings),
                         api_key=settings.temporal_api_key.value
                         if settings.temporal_api_key else None)


def by_reference(client: Client) -> Client:
    """The same connection, with every payload it sends kept in the blob store
    (`offloading_everything`)."""
    config = client.config()
    config["data_converter"] = offloading_everything(config["data_converter"])
    return Client(**config)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS for the Temporal connection: client certificates (mTLS), a private CA, or
    plain TLS for an API key (Temporal Cloud); False for a plaintext dev server."""
    tls = settings.temporal_tls
    if tls.cert is None and tls.ca is None:
        return settings.temporal_api_key is not None
    return TLSConfig(
        client_cert=tls.cert.read_bytes() if tls.cert else None,
        client_private_key=tls.key.read_bytes() if tls.key else None,
        server_root_ca_cert=tls.ca.read_bytes() if tls.ca else None,
        domain=tls.server_name,
    )


async def extend_retention(client: Client, retention: timedelta = DEFAULT_RETENTION) -> bool:
    """Raise the namespace's retention to `retention` if it is shorter.

    The dev server creates `default` with one day, after which finished runs would vanish
    from the API; `loopllama dev` keeps them for as long as a created namespace would.
    """
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    if described.config.workflow_execution_retention_ttl.ToTimedelta() >= retention:
        return False
    ttl = Duration()
    ttl.FromTimedelta(retention)
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(
            namespace=client.namespace,
            config=NamespaceConfig(workflow_execution_retention_ttl=ttl),
        )
    )
    return True


async def retention_shortfall(client: Client, retention: timedelta) -> str | None:
    """A warning when the namespace keeps closed runs for less than `retention`."""
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace)
    )
    kept = described.config.workflow_execution_retention_ttl.ToTimedelta()
    if kept >= retention:
        return None
    return (
        f"Temporal namespace {client.namespace!r} keeps closed runs for only {_days(kept)}, "
        f"less than the {_days(retention)} LoopLlama is configured for "
        "(LOOPLLAMA_RETENTION_DAYS): finished runs will answer 404 after that. Raise it with "
        f"`temporal operator namespace update --namespace {client.namespace} "
        f"--retention {int(retention.total_seconds() // 3600)}h`."
    )


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} day" + ("" if days == 1 else "s")


async def ensure_namespace_ready(
    client: Client, retention: timedelta = DEFAULT_RETENTION
) -> list[str]:
    """Create the namespace (keeping closed runs for `retention`) and register missing
    search attributes.

    Returns what it had to add, so callers can say so. Raises `TemporalSetupError`
    naming exactly what is missing when the server refuses (e.g. Temporal Cloud, where
    namespaces and search attributes are managed in the Cloud console).
    """
    added: list[str] = []
    namespace = client.namespace
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        try:
            ttl = Duration()
            ttl.FromTimedelta(retention)
            await client.workflow_service.register_namespace(
                RegisterNamespaceRequest(
                    namespace=namespace, workflow_execution_retention_period=ttl
                )
            )
        except RPCError as reg_err:
            # Another LoopLlama process (API or worker) may have created it a moment ago.
            if reg_err.status != RPCStatusCode.ALREADY_EXISTS:
                raise TemporalSetupError(
                    f"Temporal namespace {namespace!r} does not exist and could not be "
                    f"created ({reg_err.message}). Create it, e.g. `temporal operator "
                    f"namespace create --namespace {namespace}`."
                ) from reg_err
        else:
            added.append(f"namespace {namespace}")
        await _wait_until_usable(client)
    return await _ensure_search_attributes(client, added)


async def _wait_until_usable(client: Client, within: float = 30.0) -> None:
    # A new namespace reaches the frontend's cache a few seconds after it is registered;
    # until then every call in it answers NOT_FOUND.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            await client.count_workflows()
            return
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND or loop.time() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _ensure_search_attributes(client: Client, added: list[str]) -> list[str]:
    namespace = client.namespace
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    known = dict(existing.custom_attributes)
    missing = {
        key.name: key.indexed_value_type
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={
                        name: IndexedValueType.ValueType(int(value_type))
                        for name, value_type in missing.items()
                    },
                )
            )
        except RPCError as err:
            if err.status == RPCStatusCode.ALREADY_EXISTS:
                return added
            wanted = ", ".join(
                f"{name} ({value_type.name.title()})"
                for name, value_type in missing.items()
            )
            raise TemporalSetupError(
                f"Temporal namespace {namespace!r} is missing the search attributes {wanted} "
                f"and they could not be added ({err.message}). Add them with "
                "`temporal operator search-attribute create`."
            ) from err
        added.extend(f"search attribute {name}" for name in missing)
    return added
