"""Workflow (crew) definitions: HTTP-facing operations on the definition entity workflows."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from api.errors import BadRequest, Conflict, NotFound
from api.services.temporal_calls import (
    UPDATE_TIMEOUT,
    apply_update,
    decode_rows,
    describe_or_none,
    is_running,
    left_out,
    list_page,
    start_once,
    wait_until_listed,
)
from core.ids import WORKFLOW_PREFIX, id_for_key, looks_like, new_id
from core.mcp_client import McpRefused, McpUnavailable, list_tools
from core.mcp_names import usable_tool_name
from core.net_policy import DestinationRefused, check_declared_url
from core.settings import Secret
from core.temporal import SA_CREATED_AT
from core.timefmt import truncate_to_millis
from core.types import (
    Agent,
    CustomTool,
    DefinitionChange,
    McpServer,
    McpTool,
    Webhook,
    Workflow,
    WorkflowPatch,
    WorkflowSpec,
    WorkflowStatus,
)
from core.validation_messages import describe_validation_errors
from core.webhook_secrets import GENERATION_MEMO_KEY, webhook_secret
from workflows.definition import (
    DEFINITION_WORKFLOW_TYPE,
    GONE,
    INVALID,
    MEMO_KEY,
    CrewDefinitionWorkflow,
    DefinitionInput,
    StatusChange,
)

T = TypeVar("T")

log = logging.getLogger("loopllama.api")

# Definitions per page of the workflow list's listing.
LIST_PAGE_SIZE = 1000

_NO_WEBHOOK_KEY = (
    "Webhooks need LOOPLLAMA_WEBHOOK_KEY (at least 32 random characters), the same on the "
    "API and every worker: it signs deliveries. Set it, or leave out 'webhooks'."
)

class Definitions:
    """Create, read, change and delete crew definitions."""

    def __init__(self, client: Client, task_queue: str, *, allowlist: tuple[str, ...] = (),
                 webhook_key: Secret | None = None,
                 model_problem: Callable[[str], str | None] = lambda model: None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._allowlist = allowlist
        self._webhook_key = webhook_key
        # Why this deployment cannot serve a model (Settings.model_problem), or None.
        self._model_problem = model_problem
        # Where MCP servers' `env:NAME` headers are read when their tools are listed.
        self._environ = environ

    async def create(self, spec: WorkflowSpec, idempotency_key: str | None = None) -> Workflow:
        """Start a definition entity; readable at once, even before a worker picks it up.

        With an idempotency key, a retry of the same request returns the workflow the
        first attempt created instead of creating another.
        """
        self._check_models(spec.crew)
        await self._check_webhooks(spec.webhooks)
        await self._check_tools(spec.tools)
        workflow_id = new_id(WORKFLOW_PREFIX)
        if idempotency_key is not None:
            workflow_id = id_for_key(WORKFLOW_PREFIX, "workflows", idempotency_key)
            earlier = await self._find(workflow_id)
            if earlier is not None:
                return _same_spec(earlier, spec)
        if spec.mcp_servers:
            spec = _with_mcp_tools(spec, await self._list_mcp_tools(spec.mcp_servers))
        now = truncate_to_millis(datetime.now(UTC))
        definition = Workflow(
            id=workflow_id, status="active", created_at=now, updated_at=now,
            **spec.model_dump(),
        )
        await start_once(self._client.start_workflow(
            CrewDefinitionWorkflow.run,
            DefinitionInput(workflow=definition),
            id=definition.id,
            task_queue=self._task_queue,
            memo={MEMO_KEY: definition.model_dump(mode="json")},
            search_attributes=TypedSearchAttributes([SearchAttributePair(SA_CREATED_AT, now)]),
            static_summary=f"Crew definition: {definition.name}"[:200],
            # A concurrent retry with the same key joins the entity instead of failing;
            # a key whose workflow was deleted is not reused.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        ))
        await wait_until_listed(self._client, [definition.id])
        if idempotency_key is None:
            return definition
        created = await self._find(definition.id)
        if created is None:
            raise Conflict(
                "This Idempotency-Key created a workflow that has since been deleted; send a "
                "new key to create another."
            )
        if created.created_at == definition.created_at:
            return definition
        return _same_spec(created, spec)

    async def get(self, workflow_id: str) -> Workflow:
        """The current definition, or 404 (saying so when it was terminated in Temporal)."""
        return (await self.get_with_generation(workflow_id))[0]

    async def get_with_generation(self, workflow_id: str) -> tuple[Workflow, int]:
        """The current definition and its webhook secret's generation, from one read."""
        description = await self._describe(workflow_id)
        found = await _definition(description)
        if found is None:
            raise _not_found(workflow_id, description)
        return found

    def webhook_secret(self, workflow_id: str, generation: int = 0) -> str | None:
        """The workflow's webhook signing secret at `generation` (None without a key)."""
        if self._webhook_key is None:
            return None
        return webhook_secret(self._webhook_key, workflow_id, generation)

    async def rotate_webhook_secret(self, workflow_id: str) -> str:
        """A new webhook secret; deliveries are signed with it from now on."""
        if self._webhook_key is None:
            raise BadRequest(_NO_WEBHOOK_KEY)
        handle = await self._live_handle(workflow_id)
        generation = await self._apply(workflow_id, handle.execute_update(
            CrewDefinitionWorkflow.rotate_webhook_secret, rpc_timeout=UPDATE_TIMEOUT
        ))
        return webhook_secret(self._webhook_key, workflow_id, generation)

    async def _check_webhooks(self, webhooks: list[Webhook]) -> None:
        """400 naming the first webhook that may not be called (the worker checks again,
        and connects only to the address it checked)."""
        if webhooks and self._webhook_key is None:
            raise BadRequest(_NO_WEBHOOK_KEY)
        for index, hook in enumerate(webhooks):
            try:
                await check_declared_url(hook.url, self._allowlist)
            except DestinationRefused as refused:
                raise BadRequest(f"webhooks.{index}.url: {refused}.") from None

    async def _check_tools(self, tools: list[CustomTool]) -> None:
        """400 naming the first custom tool whose endpoint may not be called, by the
        rules webhooks follow (the worker checks again, and connects only to the address
        it checked)."""
        for index, tool in enumerate(tools):
            try:
                await check_declared_url(tool.url, self._allowlist)
            except DestinationRefused as refused:
                raise BadRequest(f"tools.{index}.url (tool {tool.name!r}): {refused}.") from None

    def _check_models(self, crew: list[Agent]) -> None:
        """400 naming the first agent whose model no provider of this deployment serves."""
        for index, agent in enumerate(crew):
            problem = self._model_problem(agent.model)
            if problem is not None:
                raise BadRequest(f"crew.{index}.model (agent {agent.role!r}): {problem}.")

    async def _list_mcp_tools(self, servers: list[McpServer]) -> list[McpServer]:
        """`servers` with the tools each lists now (all asked at once); 400 naming the
        first that may not be called, cannot be reached or lists nothing."""
        listed = await asyncio.gather(
            *(self._list_one(index, server) for index, server in enumerate(servers)),
            return_exceptions=True)
        for outcome in listed:
            if isinstance(outcome, BaseException):
                raise outcome
        return [outcome for outcome in listed if not isinstance(outcome, BaseException)]

    async def _list_one(self, index: int, server: McpServer) -> McpServer:
        where = f"mcp_servers.{index} (server {server.name!r})"
        try:
            await check_declared_url(server.url, self._allowlist)
            tools = await list_tools(server.url, server.headers, allowlist=self._allowlist,
                                     environ=self._environ)
        except DestinationRefused as refused:
            raise BadRequest(f"{where}.url: {refused}.") from None
        except (McpRefused, McpUnavailable) as err:
            raise BadRequest(f"{where}: {err}") from None
        # A tool whose name no model may be offered (`mcp__<server>__<tool>` past 64
        # characters, or with other characters than letters, digits, `_` and `-`) is
        # left out; the workflow object shows which tools its agents have.
        usable = [t for t in tools if usable_tool_name(server.name, t.name)]
        if not usable:
            raise BadRequest(
                f"{where}: the server lists no tools"
                + (f" whose names a model can be offered (it lists {len(tools)}; names must "
                   "fit mcp__<server>__<tool> in 64 letters, digits, '_' and '-')"
                   if tools else "")
                + ", so its agents would have none to call; check the URL, or leave the "
                "server out.")
        return server.model_copy(update={"tools": [
            McpTool(name=t.name, description=t.description, input_schema=t.input_schema)
            for t in usable]})

    async def list(self) -> list[Workflow]:
        """Every live definition, newest first: one visibility listing, whose rows carry
        the memo each definition publishes (no describe per definition).

        Rows trail a change by a few milliseconds, as run list rows do; `get` is always
        current.
        """
        query = f"WorkflowType = '{DEFINITION_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
        rows, token = await list_page(self._client, query, LIST_PAGE_SIZE)
        entries = []
        while True:
            for row in rows:
                workflow_id = row.execution.workflow_id
                payload = row.memo.fields.get(MEMO_KEY)
                if payload is None:
                    left_out(workflow_id, f"its memo has no {MEMO_KEY!r} entry")
                else:
                    entries.append((workflow_id, payload))
            if not token:
                break
            rows, token = await list_page(self._client, query, LIST_PAGE_SIZE, token)
        definitions: list[Workflow] = []
        for (workflow_id, _), data in zip(entries, await decode_rows(self._client, entries),
                                          strict=True):
            if data is None:
                continue  # undecodable; decode_rows said so
            try:
                definitions.append(_read_definition(data, workflow_id))
            except UnreadableDefinition as err:
                left_out(workflow_id, str(err))
        definitions.sort(key=lambda d: (d.created_at, d.id), reverse=True)
        return definitions

    async def change(self, workflow_id: str, patch: WorkflowPatch) -> Workflow:
        """Apply a partial edit; runs already started keep their snapshot.

        MCP servers sent are listed again (their tools may have changed); the definition
        entity checks the whole result, so agents naming a tool no server lists are a 400.
        """
        if patch.crew:
            self._check_models(patch.crew)
        if patch.mcp_servers:
            patch = patch.model_copy(update={
                "mcp_servers": await self._list_mcp_tools(patch.mcp_servers)})
        if patch.webhooks:
            await self._check_webhooks(patch.webhooks)
        if patch.tools:
            await self._check_tools(patch.tools)
        handle = await self._live_handle(workflow_id)
        return await self._apply(workflow_id, handle.execute_update(
            CrewDefinitionWorkflow.change, DefinitionChange.model_validate(patch.model_dump()),
            rpc_timeout=UPDATE_TIMEOUT,
        ))

    async def set_status(self, workflow_id: str, status: WorkflowStatus) -> Workflow:
        """Pause or resume (idempotent)."""
        handle = await self._live_handle(workflow_id)
        return await self._apply(workflow_id, handle.execute_update(
            CrewDefinitionWorkflow.set_status, StatusChange(status=status),
            rpc_timeout=UPDATE_TIMEOUT,
        ))

    async def delete(self, workflow_id: str) -> None:
        """End the definition; its runs stay readable."""
        handle = await self._live_handle(workflow_id)
        await self._apply(workflow_id, handle.execute_update(
            CrewDefinitionWorkflow.delete, rpc_timeout=UPDATE_TIMEOUT
        ))

    async def _find(self, workflow_id: str) -> Workflow | None:
        found = await _definition(await self._describe(workflow_id))
        return found[0] if found is not None else None

    async def _describe(self, workflow_id: str) -> WorkflowExecutionDescription | None:
        """The latest execution of a definition's entity (open or closed), or None."""
        if not looks_like(WORKFLOW_PREFIX, workflow_id):
            return None
        description = await describe_or_none(self._client, workflow_id)
        if description is None or description.workflow_type != DEFINITION_WORKFLOW_TYPE:
            return None
        return description

    async def _live_handle(
        self, workflow_id: str
    ) -> WorkflowHandle[CrewDefinitionWorkflow, None]:
        await self.get(workflow_id)
        return self._client.get_workflow_handle_for(CrewDefinitionWorkflow.run, workflow_id)

    async def _apply(self, workflow_id: str, update: Awaitable[T]) -> T:
        gone = NotFound(f"No workflow with id {workflow_id!r}.")
        return await apply_update(
            workflow_id, update, refusals={INVALID: BadRequest, GONE: lambda _: gone},
            closed=gone,
        )


class UnreadableDefinition(ValueError):
    """A memo that does not describe a definition; the message says why, without its
    contents."""


def _read_definition(data: Any, workflow_id: str) -> Workflow:
    """The definition an entity's memo entry describes, or `UnreadableDefinition`: an
    execution started in Temporal by hand may publish anything, and what it publishes
    must not fail a read or a list."""
    if not looks_like(WORKFLOW_PREFIX, workflow_id):
        raise UnreadableDefinition("it is not a LoopLlama workflow id")
    if not isinstance(data, dict):
        raise UnreadableDefinition(
            f"its {MEMO_KEY!r} entry is a {type(data).__name__}, not an object")
    try:
        definition = Workflow.model_validate(data)
    except (ValueError, TypeError, LookupError, RecursionError) as err:
        raise UnreadableDefinition(
            f"its memo is not a definition's ({type(err).__name__})") from None
    if definition.id != workflow_id:
        raise UnreadableDefinition("its memo describes another workflow")
    if definition.created_at.tzinfo is None:
        # LoopLlama writes UTC times; one without a zone would not sort with the others.
        raise UnreadableDefinition("its memo's created_at has no time zone")
    return definition


async def _definition(
    description: WorkflowExecutionDescription | None,
) -> tuple[Workflow, int] | None:
    """The definition a running entity publishes and its webhook secret's generation;
    None once it has ended, or when what it publishes cannot be read (logged)."""
    if description is None or not is_running(description):
        return None
    try:
        memo: Mapping[str, Any] = await description.memo()
    except Exception as err:  # noqa: BLE001 - an undecodable memo reads as no definition
        log.warning("Read %s as no definition: its memo cannot be decoded here (%s).",
                    repr(description.id)[:120], type(err).__name__)
        return None
    data, generation = memo.get(MEMO_KEY), memo.get(GENERATION_MEMO_KEY)
    try:
        definition = _read_definition(data, description.id)
    except UnreadableDefinition as err:
        log.warning("Read %s as no definition: %s.", repr(description.id)[:120], err)
        return None
    return definition, generation if isinstance(generation, int) else 0


def _not_found(workflow_id: str, description: WorkflowExecutionDescription | None) -> NotFound:
    """The 404 for a definition that is not (or no longer) there."""
    if description is not None and description.status == WorkflowExecutionStatus.TERMINATED:
        return NotFound(
            f"Workflow {workflow_id!r} was terminated in Temporal, which deletes a definition "
            f"for good (DELETE /v1/workflows/{workflow_id} is the way to delete one). Create "
            "it again with POST /v1/workflows."
        )
    if description is not None and description.status == WorkflowExecutionStatus.CANCELED:
        # Releases before the entity ignored cancel requests ended it on one.
        return NotFound(
            f"Workflow {workflow_id!r} was cancelled in Temporal by an earlier release, "
            "which deleted it. Create it again with POST /v1/workflows."
        )
    return NotFound(
        f"No workflow with id {workflow_id!r}. List workflows with GET /v1/workflows."
    )


def _with_mcp_tools(spec: WorkflowSpec, servers: list[McpServer]) -> WorkflowSpec:
    """`spec` with its MCP servers as listed, checked again: an agent may name a tool
    that no server lists (a 400 naming it)."""
    try:
        return WorkflowSpec.model_validate(
            {**spec.model_dump(), "mcp_servers": [s.model_dump() for s in servers]})
    except ValidationError as err:
        raise BadRequest(describe_validation_errors(list(err.errors()))) from None


def _same_spec(definition: Workflow, spec: WorkflowSpec) -> Workflow:
    # The listed MCP tools are the server's answer, not the request's: a retry whose
    # server lists other tools by now is still the same request.
    def sent(fields: dict[str, Any]) -> dict[str, Any]:
        return {**fields, "mcp_servers": [{**server, "tools": None}
                                          for server in fields.get("mcp_servers", [])]}
    if sent(definition.spec_fields()) != sent(spec.model_dump()):
        raise Conflict(
            "This Idempotency-Key was already used to create a different workflow; send a "
            "new key for a new workflow."
        )
    return definition
