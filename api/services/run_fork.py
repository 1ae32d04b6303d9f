"""Forking an ended run: a new run of the same crew that starts again from one step,
with edits, reusing every step the edits do not touch (core/fork_plan.py).

The fork is a new workflow execution (a new run id). Its input carries the reused and
edited steps as a retry's input carries completed ones (`CarriedRun`), so the source's
history is never touched; the fork's start (input and memo) goes to the blob store
whatever its size, so its history holds references to the reused outputs, not copies.
With `tools: "replay"` it also carries, for each step that runs again, the tool calls its
source step made and what answered them, read from the source run's model requests
(following a source that was itself a fork to the run where the step really ran).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from api.errors import BadRequest, Conflict
from api.services.run_history import last_model_requests, start_input
from api.services.temporal_calls import start_once
from core.contract import RUN_WORKFLOW_TYPE
from core.crew_graph import is_chain, parents_of
from core.fork_plan import edited_step, recorded_tool_calls, reused_step, steps_to_run, with_changes
from core.ids import RUN_PREFIX, STEP_PREFIX, new_id
from core.run_memo import run_from_memo, run_memo
from core.temporal import SA_CREATED_AT, SA_STATUS, by_reference
from core.timefmt import truncate_to_millis
from core.types import (
    TERMINAL_STATUSES,
    AgentConfig,
    CarriedRun,
    ForkOrigin,
    ForkPlan,
    ForkRequest,
    RecordedToolCall,
    Run,
    RunInput,
    Step,
    WorkflowSpec,
)
from core.validation_messages import describe_validation_errors

# How far back a chain of forks is followed for a reused step's replay records.
MAX_FORK_DEPTH = 20


class Fork:
    """One fork of one source run, planned and started."""

    def __init__(self, client: Client, source: Run, description: WorkflowExecutionDescription,
                 request: ForkRequest, model_problem: Callable[[str], str | None],
                 model_queues: Callable[[list[AgentConfig]], dict[str, str]]) -> None:
        self._client = client
        self._source = source
        self._description = description
        self._request = request
        self._model_problem = model_problem
        self._model_queues = model_queues

    async def start(self) -> Run:
        """Check the request against the source run, then start the fork (queued)."""
        source, request = self._source, self._request
        if source.status not in TERMINAL_STATUSES:
            raise Conflict(
                f"Run {source.id!r} is {source.status}; only a run that has ended (completed, "
                "failed or cancelled) can be forked. Cancel it first, or wait for it.")
        start = await start_input(self._client, source.id, self._description.run_id)
        crew = self._checked_crew(start)
        by_role = {step.role: step for step in source.steps}
        completed = [s.role for s in source.steps if s.output is not None and s.error is None]
        changed = list(request.agents)
        if request.input is not None:
            again = {agent.role for agent in crew} - set(request.outputs)
        else:
            again = steps_to_run(crew, request.start_from, changed, request.outputs, completed)
        carried: list[Step] = []
        for order, agent in enumerate(crew):
            source_step = by_role.get(agent.role)
            if agent.role in request.outputs:
                carried.append(edited_step(agent, order, request.outputs[agent.role],
                                           new_id(STEP_PREFIX), source_step))
            elif agent.role not in again and source_step is not None:
                carried.append(reused_step(source_step, new_id(STEP_PREFIX)))
        origin = ForkOrigin(run_id=source.id, step_id=_step_id(by_role, request.start_from),
                            forked_from=source.forked_from)
        replay = (await self._replay_records(sorted(again)) if request.tools == "replay"
                  else {})
        return await self._start_fork(start, crew, carried, origin, replay)

    def _checked_crew(self, start: RunInput) -> list[AgentConfig]:
        """The source's crew with the request's changes; 400 naming what does not fit."""
        request = self._request
        roles = [agent.role for agent in start.crew]
        for field, named in (("from", [request.start_from]), ("agents", list(request.agents)),
                             ("outputs", list(request.outputs))):
            for role in named:
                if role not in roles:
                    raise BadRequest(
                        f"{field}: the run's crew has no agent with role {role!r}; its roles "
                        f"are {', '.join(repr(r) for r in roles)}.")
        changes = {role: change.model_dump(exclude_unset=True)
                   for role, change in request.agents.items()}
        crew = with_changes(start.crew, changes)
        for role in request.agents:
            agent = next(a for a in crew if a.role == role)
            problem = self._model_problem(agent.model)
            if problem is not None:
                raise BadRequest(f"agents.{role}.model: {problem}.")
        try:
            WorkflowSpec.model_validate({
                "name": "fork", "crew": [a.model_dump() for a in crew],
                "human_in_the_loop": start.human_in_the_loop.model_dump(),
                "tools": [t.model_dump() for t in start.tools],
                "mcp_servers": [s.model_dump() for s in start.mcp_servers],
                "max_parallel": start.max_parallel,
            })
        except ValidationError as err:
            raise BadRequest(describe_validation_errors(list(err.errors()))) from None
        return crew

    async def _start_fork(self, start: RunInput, crew: list[AgentConfig], carried: list[Step],
                          origin: ForkOrigin, replay: dict[str, list[RecordedToolCall]]) -> Run:
        request, source = self._request, self._source
        now = truncate_to_millis(datetime.now(UTC))
        run_input = request.input if request.input is not None else source.input
        fork_id = new_id(RUN_PREFIX)
        plan = CarriedRun(steps=carried, counts_tokens=False)
        run = Run(id=fork_id, workflow_id=source.workflow_id, input=run_input, created_at=now,
                  forked_from=origin)
        plan.apply_to(run)
        run.started_at = None
        parents = parents_of(crew)
        memo = run_memo(run, run.steps, None if is_chain(parents) else parents)
        description = self._description
        attributes = [pair for pair in description.typed_search_attributes
                      if pair.key.name not in (SA_STATUS.name, SA_CREATED_AT.name)]
        fork_start = start.model_copy(update={
            "run_id": fork_id, "input": run_input, "created_at": now, "crew": crew,
            "carried": plan, "model_task_queues": self._model_queues(crew),
            "fork": ForkPlan(forked_from=origin, tools=request.tools, replay=replay),
        })
        # By reference: the fork's history holds no copy of the reused outputs, which
        # its input and memo carry; the source's history and the blob store hold them.
        await start_once(by_reference(self._client).start_workflow(
            RUN_WORKFLOW_TYPE, fork_start, id=fork_id,
            task_queue=description.task_queue or "",
            memo=memo,
            search_attributes=TypedSearchAttributes([
                *attributes, SearchAttributePair(SA_STATUS, "queued"),
                SearchAttributePair(SA_CREATED_AT, now)]),
            static_summary=f"Fork of {source.id} from {request.start_from}"[:200],
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        ))
        return run

    async def _replay_records(self, roles: list[str]) -> dict[str, list[RecordedToolCall]]:
        """For each role, the tool calls its step made where it really ran."""
        records: dict[str, list[RecordedToolCall]] = {}
        run, temporal_run_id = self._source, self._description.run_id
        wanted = set(roles)
        for _ in range(MAX_FORK_DEPTH):
            found = await last_model_requests(self._client, run.id, temporal_run_id, wanted)
            for role, request in found.items():
                records[role] = recorded_tool_calls(request.messages)
            # Steps this run reused ran in the run it was forked from.
            reused = {s.role for s in run.steps if s.reused_from and s.role in wanted}
            wanted = reused - set(found)
            if not wanted or run.forked_from is None:
                break
            earlier = await _describe_run(self._client, run.forked_from.run_id)
            if earlier is None:
                break
            run, temporal_run_id = earlier
        return records


def _step_id(by_role: dict[str, Step], role: str) -> str | None:
    step = by_role.get(role)
    return step.id if step is not None else None


async def _describe_run(client: Client, run_id: str) -> tuple[Run, str] | None:
    """An earlier run of a fork chain and its current execution, or None if gone."""
    try:
        description = await client.get_workflow_handle(run_id).describe()
        run = run_from_memo(await description.memo())
    except Exception:  # noqa: BLE001 - a source that is gone has no records to give
        return None
    return (run, description.run_id) if run is not None else None
