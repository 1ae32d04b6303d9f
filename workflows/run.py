"""One run of a crew: each agent in turn, every model call its own activity.

The workflow publishes the whole run object in its memo after every change, so reads are
a `describe` (no replay, no worker needed) and always as current as the workflow itself.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import uuid
from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TimeoutError,
    is_cancelled_exception,
)
from temporalio.workflow import (
    ChildWorkflowCancellationType,
    NondeterminismError,
    ParentClosePolicy,
)

with workflow.unsafe.imports_passed_through():
    from activities.anthropic_model import NOT_CONFIGURED, REJECTED, AnthropicModel
    from activities.email_tool import EmailTool
    from activities.http_tools import HttpTools
    from activities.offline_model import offline_messages
    from core.ids import PAUSE_PREFIX, STEP_PREFIX, id_from_uuid
    from core.prompts import build_step_input
    from core.run_memo import run_memo
    from core.temporal import SA_STATUS
    from core.timefmt import truncate_to_millis
    from core.tools import approval_summary, input_problem, tool_definitions
    from core.types import (
        ASK_HUMAN_TOOL,
        OFFLINE_MODEL,
        AgentConfig,
        Answer,
        ModelRequest,
        ModelResponse,
        Pending,
        RespondAccepted,
        Run,
        RunEventType,
        RunInput,
        RunStatus,
        Step,
        ToolCall,
        ToolResult,
        WebhookDelivery,
        respond_problem,
        stale_answer,
    )
    from workflows.webhook_delivery import WebhookDeliveryWorkflow

FAILED_RUN = "RunFailed"
PUBLISH_ONCE_PER_TASK = "publish-once-per-task"
PUBLISH_CANCELLED = "publish-cancelled"
# The Temporal workflow type of a run: the UI shows it, and the API's reads filter on it.
RUN_WORKFLOW_TYPE = "CrewRun"
# Why a respond was refused; the API maps them to 409 and 400.
NOT_WAITING = "RunNotWaiting"
WRONG_ANSWER = "AnswerDoesNotFit"
STALE_ANSWER = "PauseAlreadyAnswered"

# Temporal refuses a history past 50K events or 50 MB; a run stops short of that with a
# clear failure instead. Large texts live outside the history (core/blob_store.py), so
# these are reached only by very long tool loops.
HISTORY_EVENT_BUDGET = 40_000
HISTORY_BYTES_BUDGET = 40 * 1024 * 1024

MODEL_CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=[REJECTED, NOT_CONFIGURED],
)
# A model call may legitimately take minutes, but a dead worker must be noticed within
# seconds: the activity heartbeats every 2 s, so 10 s of silence means it is gone.
MODEL_CALL_TIMEOUT = timedelta(minutes=10)
MODEL_CALL_HEARTBEAT = timedelta(seconds=10)

# Tool calls act on the world: a few retries for passing failures (with the same
# idempotency key), then the failure goes back to the agent as the tool's result.
TOOL_CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
TOOL_CALL_TIMEOUT = timedelta(minutes=2)
TOOL_CALL_HEARTBEAT = timedelta(seconds=10)


class StepFailed(Exception):
    """An agent's step could not finish; the message is for the user."""


@workflow.defn(name=RUN_WORKFLOW_TYPE)
class CrewRunWorkflow:
    """Runs the crew snapshot it was started with, agent after agent."""

    @workflow.init
    def __init__(self, start: RunInput) -> None:
        self._start = start
        self._answer: Answer | None = None
        self._coalesce = False
        self._unpublished: dict[int, Step] | None = None
        self._pauses = 0
        self._delivery_starts: list[asyncio.Task[None]] = []
        self._run = Run(
            id=start.run_id,
            workflow_id=start.workflow_id,
            input=start.input,
            created_at=start.created_at,
        )

    @workflow.run
    async def run(self, start: RunInput) -> Run:
        """Execute every agent in order; return the finished run without its steps.

        The steps live in the memo; returning them too would repeat every output once
        per later step (in the step inputs) and could outgrow Temporal's payload limit.

        Every way out ends the run with a status: completed, failed (a step failed, or
        the workflow code raised something unexpected) or cancelled. Only nondeterminism
        fails the workflow task instead, so a fixed deploy can pick the run up again.
        """
        # Runs started before this version published on every change; they must replay
        # doing so. Newer runs publish once per workflow task (see `_publish`).
        self._coalesce = workflow.patched(PUBLISH_ONCE_PER_TASK)
        self._run.started_at = self._now()
        self._set_status("running")
        self._notify("run.started")
        try:
            await self._run_crew(start)
        except StepFailed as failure:
            failure_reason = str(failure)
        except NondeterminismError:
            raise
        except Exception as err:  # noqa: BLE001 - every other path must end the run
            if is_cancelled_exception(err):
                await self._end_cancelled()
                raise
            workflow.logger.exception("Run %s hit an unexpected error", self._run.id)
            failure_reason = (
                f"internal error in the run workflow ({type(err).__name__}: {err}); "
                "the worker log has the details"
            )
        except asyncio.CancelledError:
            await self._end_cancelled()
            raise
        else:
            self._finish("completed")
            self._notify("run.completed")
            await self._deliveries_started()
            return self._run.model_copy(update={"steps": []})
        await self._end_failed(failure_reason)

    async def _run_crew(self, start: RunInput) -> None:
        prior: list[tuple[str, str]] = []
        for order, agent in enumerate(start.crew):
            step = Step(
                id=id_from_uuid(STEP_PREFIX, workflow.uuid4()),
                order=order,
                role=agent.role,
                model=agent.model,
                input=build_step_input(start.input, prior),
                started_at=self._now(),
            )
            self._run.steps.append(step)
            self._run.total_steps = len(self._run.steps)
            self._publish(step)
            self._notify("step.started", step)
            output = await self._run_agent(agent, step)
            step.output = output
            step.finished_at = self._now()
            self._publish(step)
            self._notify("step.completed", step)
            prior.append((agent.role, output))
        self._run.output = prior[-1][1] if prior else None

    def _current_step(self) -> Step | None:
        """The step that has started but not finished, if any."""
        steps = self._run.steps
        return steps[-1] if steps and steps[-1].finished_at is None else None

    async def _end_failed(self, reason: str) -> NoReturn:
        """Record the failure in the run and fail the Temporal execution with it."""
        step = self._current_step()
        self._run.pending = None
        if step is None:
            self._run.error = f"Run failed: {reason}"
            self._finish("failed")
        else:
            step.error = reason
            step.finished_at = self._now()
            self._run.error = f"Step {step.order + 1} ({step.role}) failed: {reason}"
            self._finish("failed", step)
            self._notify("step.failed", step)
        self._notify("run.failed")
        await self._deliveries_started()
        raise ApplicationError(self._run.error, type=FAILED_RUN, non_retryable=True)

    async def _end_cancelled(self) -> None:
        """Publish the cancellation; the caller re-raises so Temporal records it."""
        # Runs cancelled before this version ended without publishing; replaying them
        # must issue no extra commands.
        if not workflow.patched(PUBLISH_CANCELLED):
            return
        step = self._current_step()
        self._run.pending = None
        if step is None:
            self._finish("cancelled")
        else:
            step.error = "cancelled"
            step.finished_at = self._now()
            self._finish("cancelled", step)
        self._notify("run.cancelled")
        await self._deliveries_started()

    def _notify(self, kind: RunEventType, step: Step | None = None) -> None:
        """Start delivering `kind` to every webhook that wants it, without waiting.

        Each delivery is a child workflow that outlives the run if it must, so a slow or
        dead receiver never holds the run up. Runs without webhooks issue no command.
        """
        hooks = [hook for hook in self._start.webhooks if kind in hook.events]
        if not hooks:
            return
        data = self._run.model_dump(mode="json", exclude={"steps"})
        if step is not None:
            # The step without its input (every earlier output: large, and in the run).
            data["step"] = step.model_dump(mode="json", exclude={"input"})
        for hook in hooks:
            delivery = WebhookDelivery(
                message_id=f"msg_{workflow.uuid4().hex}", url=hook.url,
                workflow_id=self._start.workflow_id,
                secret_version=self._start.webhook_secret_version, type=kind,
                timestamp=self._now(), data=data,
            )
            self._delivery_starts.append(asyncio.create_task(self._start_delivery(delivery)))

    async def _start_delivery(self, delivery: WebhookDelivery) -> None:
        await workflow.start_child_workflow(
            WebhookDeliveryWorkflow.run,
            delivery,
            id=f"{self._run.id}-{delivery.message_id}",
            parent_close_policy=ParentClosePolicy.ABANDON,
            cancellation_type=ChildWorkflowCancellationType.ABANDON,
            static_summary=f"{delivery.type} for run {self._run.id}",
        )

    async def _deliveries_started(self) -> None:
        """Wait until Temporal has every delivery this run started (they go on alone)."""
        if self._delivery_starts:
            await asyncio.gather(*self._delivery_starts)

    @workflow.query
    def get(self) -> Run:
        """The run as it stands."""
        return self._run

    @workflow.update
    def respond(self, answer: Answer) -> RespondAccepted:
        """A person's answer to the pending question or approval; the run resumes."""
        self._answer = answer
        self._run.pending = None
        self._set_status("running")
        return RespondAccepted(id=self._run.id, status="running")

    @respond.validator
    def _validate_respond(self, answer: Answer) -> None:
        # Runs inside the workflow, one message at a time: of two answers sent at once,
        # the second finds the run no longer waiting and is refused (409).
        pending = self._run.pending
        if self._run.status != "waiting_input" or pending is None or self._answer is not None:
            raise ApplicationError(
                f"run is {self._run.status}, not waiting_input", type=NOT_WAITING,
                non_retryable=True,
            )
        stale = stale_answer(pending, answer)
        if stale is not None:
            raise ApplicationError(stale, type=STALE_ANSWER, non_retryable=True)
        problem = respond_problem(pending, answer)
        if problem is not None:
            raise ApplicationError(problem, type=WRONG_ANSWER, non_retryable=True)

    async def _run_agent(self, agent: AgentConfig, step: Step) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": step.input}]
        tools = tool_definitions(
            agent, self._start.tools, self._start.human_in_the_loop.allow_input_requests
        )
        schemas = {tool["name"]: tool["input_schema"] for tool in tools}
        for rounds in range(agent.max_tool_rounds + 1):
            response = await self._call_model(agent, step, messages, tools)
            uses = response.tool_uses()
            if response.stop_reason != "tool_use" or not uses:
                return response.text()
            if rounds == agent.max_tool_rounds:
                break
            messages.append({"role": "assistant", "content": response.content})
            results = []
            for position, use in enumerate(uses):
                result = await self._use_tool(agent, use, schemas, (step.order, rounds, position))
                results.append(
                    {"type": "tool_result", "tool_use_id": use["id"],
                     "content": result.content, "is_error": result.is_error}
                )
            messages.append({"role": "user", "content": results})
        raise StepFailed(
            f"the agent asked for more than {agent.max_tool_rounds} rounds of tool calls "
            "(max_tool_rounds); raise the limit or simplify the task"
        )

    async def _use_tool(
        self, agent: AgentConfig, use: dict[str, Any], schemas: dict[str, dict[str, Any]],
        place: tuple[int, int, int],
    ) -> ToolResult:
        """Run one tool call; `place` is (step, round, position) for its idempotency key."""
        name, tool_input = str(use.get("name")), use.get("input")
        if name not in schemas:
            return ToolResult(content=f"There is no tool named {name!r}.", is_error=True)
        problem = input_problem(schemas[name], tool_input)
        if problem is not None or not isinstance(tool_input, dict):
            return ToolResult(
                content=f"Invalid input for {name}: {problem}. Nothing was run; correct the "
                "input and call the tool again.",
                is_error=True,
            )
        if name == ASK_HUMAN_TOOL:
            answer = await self._wait_for_human(
                Pending(kind="input", prompt=str(tool_input["question"]))
            )
            return ToolResult(content=answer.input or "")
        if name in self._start.human_in_the_loop.approval_required_tools:
            decision = await self._wait_for_human(
                Pending(kind="approval", prompt=approval_summary(name, tool_input), tool=name,
                        tool_input=tool_input)
            )
            if decision.action == "reject":
                reason = (decision.reason or "").strip() or "no reason given"
                return ToolResult(
                    content=f"The user declined this {name} call, so it was not run. "
                    f"Reason: {reason}",
                    is_error=True,
                )
        return await self._run_tool(agent, name, str(use["id"]), tool_input, place)

    async def _wait_for_human(self, pending: Pending) -> Answer:
        self._answer = None
        self._pauses += 1
        # Deterministic without drawing on the workflow's random numbers (step ids do);
        # Temporal's run id changes on a reset, so a retried step's pauses get new ids.
        pending.id = id_from_uuid(
            PAUSE_PREFIX, uuid.uuid5(uuid.NAMESPACE_URL, f"{workflow.info().run_id}/{self._pauses}")
        )
        self._run.pending = pending
        self._set_status("waiting_input")
        self._notify("run.waiting_input")
        seconds = self._start.human_in_the_loop.input_timeout_seconds
        self._flush()
        try:
            await workflow.wait_condition(
                lambda: self._answer is not None,
                timeout=timedelta(seconds=seconds) if seconds else None,
                timeout_summary="waiting for a human",
            )
        except builtins.TimeoutError:
            self._run.pending = None
            raise StepFailed(
                f"timed out after {seconds}s waiting for a human to respond to: "
                f"{pending.prompt}"
            ) from None
        answer, self._answer = self._answer, None
        assert answer is not None
        self._notify("run.resumed")
        return answer

    async def _run_tool(
        self, agent: AgentConfig, name: str, tool_use_id: str, tool_input: dict[str, Any],
        place: tuple[int, int, int],
    ) -> ToolResult:
        custom = next((t for t in self._start.tools if t.name == name), None)
        step, round_, position = place
        call = ToolCall(run_id=self._run.id, tool_use_id=tool_use_id, name=name,
                        input=tool_input, custom=custom, step=step, round=round_,
                        position=position)
        activity: Any = {"send_email": EmailTool.send, "http_request": HttpTools.http_request}.get(
            name, HttpTools.custom_tool
        )
        self._check_history_budget()
        self._flush()
        try:
            return await workflow.execute_activity(
                activity,
                call,
                start_to_close_timeout=TOOL_CALL_TIMEOUT,
                heartbeat_timeout=TOOL_CALL_HEARTBEAT,
                retry_policy=TOOL_CALL_RETRY,
                summary=f"{agent.role} · {name}",
                result_type=ToolResult,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            return ToolResult(
                content=f"The {name} tool failed: {_describe_activity_failure(err, 'tool')}.",
                is_error=True,
            )

    async def _call_model(
        self, agent: AgentConfig, step: Step, messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
    ) -> ModelResponse:
        request = ModelRequest(
            model=agent.model,
            system=agent.instructions,
            messages=list(messages),
            tools=tools,
            max_tokens=agent.max_tokens,
        )
        activity = offline_messages if agent.model == OFFLINE_MODEL else AnthropicModel.call
        self._check_history_budget()
        self._flush()
        try:
            response = await workflow.execute_activity(
                activity,  # type: ignore[arg-type]
                request,
                start_to_close_timeout=MODEL_CALL_TIMEOUT,
                heartbeat_timeout=MODEL_CALL_HEARTBEAT,
                retry_policy=MODEL_CALL_RETRY,
                summary=f"{agent.role} · {agent.model}",
                # A rate-limited model's calls wait their turn on its own task queue.
                task_queue=self._start.model_task_queues.get(agent.model),
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            raise StepFailed(_describe_activity_failure(err, "model")) from None
        step.tokens_in += response.tokens_in
        step.tokens_out += response.tokens_out
        step.tokens_in_cached += response.tokens_in_cached
        step.tokens_in_cache_write += response.tokens_in_cache_write
        self._run.tokens_in += response.tokens_in
        self._run.tokens_out += response.tokens_out
        self._run.tokens_in_cached += response.tokens_in_cached
        self._run.tokens_in_cache_write += response.tokens_in_cache_write
        self._publish(step)
        return response

    def _check_history_budget(self) -> None:
        info = workflow.info()
        events, size = info.get_current_history_length(), info.get_current_history_size()
        if events > HISTORY_EVENT_BUDGET or size > HISTORY_BYTES_BUDGET:
            raise StepFailed(
                f"the run's Temporal history reached {events} events and "
                f"{size / 1024 / 1024:.1f} MB, near Temporal's limits of 50,000 events and "
                "50 MB per run; lower the agents' max_tool_rounds or split the crew"
            )

    def _now(self) -> datetime:
        return truncate_to_millis(workflow.now())

    def _set_status(self, status: RunStatus, *changed: Step) -> None:
        self._run.status = status
        workflow.upsert_search_attributes([SA_STATUS.value_set(status)])
        self._publish(*changed)

    def _finish(self, status: RunStatus, *changed: Step) -> None:
        self._run.finished_at = self._now()
        self._set_status(status, *changed)
        self._flush()

    def _publish(self, *changed: Step) -> None:
        """Make the run's current state (and these steps) visible to readers.

        Everything between two awaits happens in one workflow task, so new runs collect
        the changes and `_flush` writes them once, just before the run next waits:
        one memo event per task instead of one per change.
        """
        if not self._coalesce:
            workflow.upsert_memo(run_memo(self._run, changed))
            return
        if self._unpublished is None:
            self._unpublished = {}
        self._unpublished.update({step.order: step for step in changed})

    def _flush(self) -> None:
        """Publish what changed, just before the run waits (or ends)."""
        if self._unpublished is not None:
            workflow.upsert_memo(run_memo(self._run, self._unpublished.values()))
            self._unpublished = None
        # What the Temporal UI shows as the run's Current Details; it adds nothing to
        # the history (the UI asks the worker).
        workflow.set_current_details(current_details(self._run, len(self._start.crew)))


def current_details(run: Run, crew_size: int) -> str:
    """What the run is doing, for a person looking at it in the Temporal UI."""
    pending = run.pending
    if run.status == "waiting_input" and pending is not None:
        respond = f"`POST /v1/runs/{run.id}/respond`"
        pause = f'"pause_id": "{pending.id}"'
        if pending.kind == "approval":
            arguments = json.dumps(pending.tool_input, ensure_ascii=False, sort_keys=True)
            return "\n".join([
                "**Waiting for a human: approval**", "", pending.prompt, "",
                f"Tool: `{pending.tool}`", f"Input: `{arguments[:2000]}`", "",
                f'Decide with {respond} and `{{"action": "approve", {pause}}}` or '
                f'`{{"action": "reject", "reason": "...", {pause}}}`, or with '
                f"`loopllama runs respond {run.id} --approve` (or `--reject --reason ...`).",
            ])
        return "\n".join([
            "**Waiting for a human: a question**", "", pending.prompt, "",
            f'Answer with {respond} and `{{"action": "input", "input": "...", {pause}}}`, '
            f'or with `loopllama runs respond {run.id} --input "..."`.',
        ])
    if run.status in ("completed", "failed", "cancelled"):
        return f"**{run.status.capitalize()}**" + (f": {run.error}" if run.error else ".")
    step = run.steps[-1] if run.steps else None
    if step is None:
        return "Starting."
    return f"**Step {step.order + 1} of {crew_size}**: {step.role} ({step.model})"


def _describe_activity_failure(err: ActivityError, what: str) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        if cause.non_retryable or cause.type in (REJECTED, NOT_CONFIGURED):
            return cause.message
        return f"{cause.message} (gave up after repeated retries)"
    if isinstance(cause, TimeoutError):
        return f"the {what} call timed out"
    return str(cause or err)
