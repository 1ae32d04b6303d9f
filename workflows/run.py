"""One run of a crew: each agent in turn, every model call its own activity.

The workflow publishes the whole run object in its memo after every change, so reads are
a `describe` (no replay, no worker needed) and always as current as the workflow itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.anthropic_model import NOT_CONFIGURED, REJECTED, AnthropicModel
    from activities.offline_model import offline_messages
    from core.ids import STEP_PREFIX, id_from_uuid
    from core.prompts import build_step_input
    from core.temporal import SA_STATUS
    from core.timefmt import truncate_to_millis
    from core.types import (
        OFFLINE_MODEL,
        Agent,
        ModelRequest,
        ModelResponse,
        Run,
        RunInput,
        RunStatus,
        Step,
    )

MEMO_KEY = "run"
FAILED_RUN = "RunFailed"

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


class StepFailed(Exception):
    """An agent's step could not finish; the message is for the user."""


@workflow.defn(name="CrewRun")
class CrewRunWorkflow:
    """Runs the crew snapshot it was started with, agent after agent."""

    @workflow.init
    def __init__(self, start: RunInput) -> None:
        self._run = Run(
            id=start.run_id,
            workflow_id=start.workflow_id,
            input=start.input,
            created_at=start.created_at,
        )

    @workflow.run
    async def run(self, start: RunInput) -> Run:
        """Execute every agent in order and return the finished run."""
        self._run.started_at = self._now()
        self._set_status("running")
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
            self._publish()
            try:
                output = await self._run_agent(agent, step)
            except StepFailed as failure:
                step.error = str(failure)
                step.finished_at = self._now()
                self._run.error = f"Step {order + 1} ({agent.role}) failed: {failure}"
                self._finish("failed")
                raise ApplicationError(
                    self._run.error, type=FAILED_RUN, non_retryable=True
                ) from None
            step.output = output
            step.finished_at = self._now()
            self._publish()
            prior.append((agent.role, output))
        self._run.output = prior[-1][1] if prior else None
        self._finish("completed")
        return self._run

    @workflow.query
    def get(self) -> Run:
        """The run as it stands."""
        return self._run

    async def _run_agent(self, agent: Agent, step: Step) -> str:
        messages: list[dict[str, object]] = [{"role": "user", "content": step.input}]
        response = await self._call_model(agent, step, messages)
        return response.text()

    async def _call_model(
        self, agent: Agent, step: Step, messages: list[dict[str, object]]
    ) -> ModelResponse:
        request = ModelRequest(
            model=agent.model,
            system=agent.instructions,
            messages=messages,
            max_tokens=agent.max_tokens,
        )
        activity = offline_messages if agent.model == OFFLINE_MODEL else AnthropicModel.call
        try:
            response = await workflow.execute_activity(
                activity,  # type: ignore[arg-type]
                request,
                start_to_close_timeout=MODEL_CALL_TIMEOUT,
                heartbeat_timeout=MODEL_CALL_HEARTBEAT,
                retry_policy=MODEL_CALL_RETRY,
                summary=f"{agent.role} · {agent.model}",
            )
        except ActivityError as err:
            raise StepFailed(_describe_activity_failure(err)) from None
        step.tokens_in += response.tokens_in
        step.tokens_out += response.tokens_out
        self._run.tokens_in += response.tokens_in
        self._run.tokens_out += response.tokens_out
        self._publish()
        return response

    def _now(self) -> datetime:
        return truncate_to_millis(workflow.now())

    def _set_status(self, status: RunStatus) -> None:
        self._run.status = status
        workflow.upsert_search_attributes([SA_STATUS.value_set(status)])
        self._publish()

    def _finish(self, status: RunStatus) -> None:
        self._run.finished_at = self._now()
        self._set_status(status)

    def _publish(self) -> None:
        workflow.upsert_memo({MEMO_KEY: self._run.model_dump(mode="json")})


def _describe_activity_failure(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        if cause.non_retryable or cause.type in (REJECTED, NOT_CONFIGURED):
            return cause.message
        return f"{cause.message} (gave up after repeated retries)"
    if isinstance(cause, TimeoutError):
        return "the model call timed out"
    return str(cause or err)
