"""Runs: trigger, read and list crew runs (each one Temporal workflow execution)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from api.errors import BadRequest, Conflict, NotFound
from api.services.definitions import Definitions
from api.services.recent_runs import RecentRuns
from api.services.run_fork import Fork
from api.services.run_list import settled_newest_runs
from api.services.run_retry import start_retry
from api.services.run_truth import reconcile
from api.services.temporal_calls import (
    UPDATE_TIMEOUT,
    apply_update,
    describe_or_none,
    start_once,
)
from core.contract import (
    NOT_WAITING,
    RESPOND_UPDATE,
    RUN_WORKFLOW_TYPE,
    STALE_ANSWER,
    WRONG_ANSWER,
)
from core.ids import RUN_PREFIX, WORKFLOW_PREFIX, id_for_key, looks_like, new_id
from core.run_memo import run_from_memo, run_memo
from core.settings import Settings
from core.temporal import SA_CREATED_AT, SA_CREW, SA_STATUS, SA_WORKFLOW_ID
from core.timefmt import truncate_to_millis
from core.types import (
    TERMINAL_STATUSES,
    AgentConfig,
    Answer,
    ForkRequest,
    RespondAccepted,
    RespondRequest,
    Run,
    RunInput,
    TriggerRequest,
    answered_pause,
    respond_problem,
    stale_answer,
)

log = logging.getLogger("loopllama.api")

# A cancel answers once the run has ended, which an idle worker makes happen in
# milliseconds; without a worker it answers after this with the run as it stands.
CANCEL_WAIT_SECONDS = 5.0


class Runs:
    """Trigger and read runs."""

    def __init__(self, client: Client, settings: Settings, definitions: Definitions,
                 recent: RecentRuns) -> None:
        self._client = client
        self._settings = settings
        self._task_queue = settings.temporal_task_queue
        self._definitions = definitions
        self._recent = recent

    def _model_queues(self, crew: list[AgentConfig]) -> dict[str, str]:
        queues = {agent.model: self._settings.model_task_queue(agent.model) for agent in crew}
        return {model: queue for model, queue in queues.items() if queue is not None}

    async def trigger(
        self, workflow_id: str, request: TriggerRequest, idempotency_key: str | None = None
    ) -> Run:
        """Start a run on a snapshot of the crew as it is now; 409 while paused.

        With an idempotency key, a retry of the same request returns the run the first
        attempt started (in its current state) instead of starting another.
        """
        run_id = new_id(RUN_PREFIX)
        if idempotency_key is not None:
            run_id = id_for_key(RUN_PREFIX, workflow_id, idempotency_key)
            earlier = await self._find(run_id)
            if earlier is not None:
                return _same_request(earlier, request)
        definition, secret_generation = await self._definitions.get_with_generation(workflow_id)
        if definition.status == "paused":
            raise Conflict(
                f"Workflow {workflow_id!r} is paused, so it takes no new runs. Resume it with "
                f"POST /v1/workflows/{workflow_id}/resume, then trigger again."
            )
        now = truncate_to_millis(datetime.now(UTC))
        run = Run(id=run_id, workflow_id=workflow_id, input=request.input, created_at=now)
        await start_once(self._client.start_workflow(
            RUN_WORKFLOW_TYPE,
            RunInput(
                run_id=run.id,
                workflow_id=workflow_id,
                input=request.input,
                created_at=now,
                crew=definition.crew,
                human_in_the_loop=definition.human_in_the_loop,
                tools=definition.tools,
                mcp_servers=definition.mcp_servers,
                webhooks=definition.webhooks,
                webhook_secret_version=secret_generation,
                model_task_queues=self._model_queues(definition.crew),
                max_parallel=definition.max_parallel,
            ),
            id=run.id,
            task_queue=self._task_queue,
            memo=run_memo(run),
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(SA_WORKFLOW_ID, workflow_id),
                SearchAttributePair(SA_STATUS, run.status),
                SearchAttributePair(SA_CREATED_AT, now),
                # Search attributes are never encrypted: with LOOPLLAMA_ENCRYPTION_KEY
                # they hold only ids, statuses and times, so the crew's name stays out.
                *([] if self._settings.encryption_keys else
                  [SearchAttributePair(SA_CREW, definition.name)]),
            ]),
            static_summary=f"{definition.name}: {request.input}"[:200],
            # A concurrent retry with the same key joins the run instead of failing.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        ))
        # Not listed yet for ~10 ms; a list of this crew from this process waits for it.
        self._recent.started(workflow_id, run.id)
        if idempotency_key is not None:
            # A concurrent attempt with the same key may have started the run first; then
            # answer with that run. This attempt's own run is answered as created: queued.
            current = await self.get(run.id)
            if current.created_at != run.created_at:
                return _same_request(current, request)
        return run

    async def get(self, run_id: str) -> Run:
        """The run as its workflow last published it (no replay, no worker needed)."""
        run = await self._find(run_id)
        if run is None:
            raise NotFound(f"No run with id {run_id!r}.")
        return run

    async def _find(self, run_id: str) -> Run | None:
        found = await self._describe(run_id)
        return found[0] if found is not None else None

    async def _describe(self, run_id: str) -> tuple[Run, WorkflowExecutionDescription] | None:
        """The run, reconciled with how its execution stands, and the execution."""
        if not looks_like(RUN_PREFIX, run_id):
            return None
        description = await describe_or_none(self._client, run_id)
        if description is None or description.workflow_type != RUN_WORKFLOW_TYPE:
            return None
        try:
            memo = await description.memo()
        except Exception as err:  # noqa: BLE001 - an undecodable memo reads as no run
            log.warning("Read %s as no run: its memo cannot be decoded here (%s).",
                        repr(run_id)[:120], type(err).__name__)
            return None
        run = run_from_memo(memo)
        if run is None or run.id != run_id:
            return None  # not a run's memo (an execution started in Temporal by hand)
        run = await reconcile(
            self._client, run, description.status, description.close_time, description.run_id
        )
        return run, description

    async def cancel(self, run_id: str) -> Run:
        """Ask Temporal to cancel the run; answer with it once it has ended (or soon).

        The run's workflow catches the cancellation, cancels the call in flight and
        publishes `cancelled`; with no worker running, that happens when one starts.
        """
        run, description = await self._require(run_id)
        if run.status in TERMINAL_STATUSES:
            raise Conflict(
                f"Run {run_id!r} is already {run.status}; only a run that has not ended can "
                "be cancelled."
            )
        handle = self._client.get_workflow_handle(run_id, run_id=description.run_id)
        try:
            await handle.cancel()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # It closed between the read and the cancel; say how.
            return await self.get(run_id)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), CANCEL_WAIT_SECONDS)
        return await self.get(run_id)

    async def retry(self, run_id: str) -> Run:
        """Go on with a failed run from its failed step (a new execution carrying the
        completed work forward; see run_retry)."""
        run, description = await self._require(run_id)
        if run.status != "failed":
            raise Conflict(
                f"Run {run_id!r} is {run.status}; only a failed run can be retried."
            )
        if run.started_at is None:
            raise Conflict(
                f"Run {run_id!r} ended before it began any step, so there is nothing to "
                "go on from; trigger a new run instead."
            )
        await start_retry(self._client, run, description)
        return await self.get(run_id)

    async def fork(self, run_id: str, request: ForkRequest) -> Run:
        """A new run of the source's crew from `request.start_from`, reusing the steps
        the request does not touch (see run_fork); 409 unless the source has ended."""
        source, description = await self._require(run_id)
        definition = await self._definitions.get(source.workflow_id)
        if definition.status == "paused":
            raise Conflict(
                f"Workflow {source.workflow_id!r} is paused, so it takes no new runs, forks "
                f"among them. Resume it with POST /v1/workflows/{source.workflow_id}/resume.")
        fork = Fork(self._client, source, description, request,
                    model_problem=self._settings.model_problem,
                    model_queues=self._model_queues)
        started = await fork.start()
        self._recent.started(source.workflow_id, started.id)
        return started

    async def current_execution(self, run_id: str) -> str:
        """The Temporal run id of the run's latest execution (a retry makes a new one);
        404 for an unknown run."""
        _, description = await self._require(run_id)
        return description.run_id

    async def _require(self, run_id: str) -> tuple[Run, WorkflowExecutionDescription]:
        found = await self._describe(run_id)
        if found is None:
            raise NotFound(f"No run with id {run_id!r}.")
        return found

    async def respond(self, run_id: str, request: RespondRequest) -> RespondAccepted:
        """Answer a paused run; race-free because the run itself checks and applies it."""
        answer = Answer.model_validate(request.model_dump())
        run = await self.get(run_id)
        not_waiting = Conflict(
            f"Run {run_id!r} is {run.status}, not waiting_input: there is nothing to "
            "respond to. GET the run to see its state."
        )
        pauses = run.pauses or ([run.pending] if run.pending else [])
        if run.status != "waiting_input" or not pauses:
            raise not_waiting
        pause = answered_pause(pauses, answer)
        if pause is None:
            raise Conflict(stale_answer(pauses, answer))
        problem = respond_problem(pause, answer)
        if problem is not None:
            raise BadRequest(problem)
        # An answer without a pause_id means the pause the caller saw as `pending`: pin
        # it, so that if someone answers that pause first, this one is refused (409)
        # instead of landing on the next open pause.
        answer.pause_id = answer.pause_id or pause.id
        # From here on the pause was open when read: if the run refuses the answer as not
        # waiting, or has ended, another respond (or a timeout, a cancel) closed it since.
        # Saying "is waiting_input, not waiting_input" from the earlier read would be wrong.
        closed_since = Conflict(stale_answer([], answer))
        ended = Conflict(
            f"Run {run_id!r} ended before this answer reached it: there is nothing to "
            "respond to. GET the run to see how it ended."
        )
        handle = self._client.get_workflow_handle(run_id)
        return await apply_update(
            run_id,
            handle.execute_update(RESPOND_UPDATE, answer, result_type=RespondAccepted,
                                  rpc_timeout=UPDATE_TIMEOUT),
            refusals={
                NOT_WAITING: lambda _: closed_since,
                STALE_ANSWER: Conflict,
                WRONG_ANSWER: BadRequest,
            },
            closed=ended,
        )

    async def list(self, workflow_id: str) -> list[Run]:
        """The workflow's 50 most recently created runs, newest first."""
        if not looks_like(WORKFLOW_PREFIX, workflow_id):
            # Never build a visibility query from an id that is not one of ours.
            await self._definitions.get(workflow_id)
        # The existence check (404) and the listing do not depend on each other.
        _, runs = await asyncio.gather(
            self._definitions.get(workflow_id),
            settled_newest_runs(self._client, self._recent, workflow_id),
        )
        return runs


def _same_request(run: Run, request: TriggerRequest) -> Run:
    if run.input != request.input:
        raise Conflict(
            "This Idempotency-Key was already used to trigger a run with a different input; "
            "send a new key for a new run."
        )
    return run
