"""One run of a crew: its lifecycle, its scheduling and its message handlers.

Every agent whose `after` agents have all completed starts at once (up to the crew's
`max_parallel`), each step in its own lane; the work of a step is `AgentStep`, its
pauses `HumanGate`, what readers see `RunPublisher`, webhooks `RunNotifier`.

A chain (the reference's crew, and every crew before `after` existed) runs in the
workflow's main coroutine, step after step, issuing exactly the commands it always has:
histories recorded before crew graphs replay unchanged.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import NoReturn

from temporalio import workflow
from temporalio.exceptions import ApplicationError, is_cancelled_exception
from temporalio.workflow import NondeterminismError

with workflow.unsafe.imports_passed_through():
    from core.contract import FAILED_RUN, GET_QUERY, RESPOND_UPDATE, RUN_WORKFLOW_TYPE
    from core.crew_graph import ancestors_of, is_chain, parents_of
    from core.ids import STEP_PREFIX, id_from_uuid
    from core.prompts import input_from
    from core.timefmt import truncate_to_millis
    from core.types import (
        Answer,
        CarriedRun,
        RespondAccepted,
        Run,
        RunEventType,
        RunInput,
        RunStatus,
        Step,
        StepProgress,
    )
    from workflows.agent_step import AgentStep
    from workflows.failures import StepFailed
    from workflows.pauses import HumanGate
    from workflows.run_notifier import RunNotifier
    from workflows.run_publisher import RunPublisher

PUBLISH_ONCE_PER_TASK = "publish-once-per-task"
PUBLISH_CANCELLED = "publish-cancelled"


class CrewFailed(Exception):
    """A step failed (or, with `step` None, the run itself): the run ends failed."""

    def __init__(self, step: Step | None, reason: str, *, restart: bool = False) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.restart = restart


@workflow.defn(name=RUN_WORKFLOW_TYPE)
class CrewRunWorkflow:
    """Runs the crew snapshot it was started with."""

    @workflow.init
    def __init__(self, start: RunInput) -> None:
        self._start = start
        parents = parents_of(start.crew)
        self._parents = parents
        self._chain = is_chain(parents)
        # For a chain, every earlier step (input_from's default); else each step's own.
        self._ancestors = None if self._chain else ancestors_of(parents)
        self._run = Run(
            id=start.run_id,
            workflow_id=start.workflow_id,
            input=start.input,
            created_at=start.created_at,
            forked_from=start.fork.forked_from if start.fork is not None else None,
        )
        self._outputs: dict[int, tuple[str, str]] = {}
        self._progress: dict[int, StepProgress] = {}
        if start.carried is not None:
            self._carry(start.carried)
        self._publisher = RunPublisher(self._run, len(start.crew),
                                       None if self._chain else parents)
        self._notifier = RunNotifier(start, self._run)
        self._gate = HumanGate(self._run, start.human_in_the_loop.input_timeout_seconds,
                               self._publisher, self._notifier, self._now)
        # Scheduling: steps started, steps working now, lanes running them (graphs).
        self._started: set[int] = set(self._outputs)
        self._working: set[int] = set()
        self._lanes: list[asyncio.Task[None]] = []
        self._failure: CrewFailed | NondeterminismError | None = None
        # Steps that ended without output besides the failed one (cancelled siblings,
        # a second failure in the same moment): published with the run's end.
        self._ended: list[Step] = []

    def _carry(self, carried: CarriedRun) -> None:
        """Take over what the failed execution this one retries had finished."""
        carried.apply_to(self._run)
        for step in self._run.steps:
            self._outputs[step.order] = (step.role, step.output or "")
        for step in self._run.steps:
            step.input = self._input_for(step.order)
        self._progress = {entry.order: entry for entry in carried.progress}

    @workflow.run
    async def run(self, start: RunInput) -> Run:
        """Execute the crew; return the finished run without its steps.

        The steps live in the memo; returning them too would repeat every output once
        per later step (in the step inputs) and could outgrow Temporal's payload limit.

        Every way out ends the run with a status: completed, failed (a step failed, or
        the workflow code raised something unexpected) or cancelled. Only nondeterminism
        fails the workflow task instead, so a fixed deploy can pick the run up again.
        """
        # Runs started before this version published on every change; they must replay
        # doing so. Newer runs publish once per workflow task (see RunPublisher).
        self._publisher.coalesce = workflow.patched(PUBLISH_ONCE_PER_TASK)
        if self._run.started_at is None:
            self._run.started_at = self._now()
        self._publisher.set_status("running")
        self._notify("run.started")
        try:
            await self._run_crew()
        except CrewFailed as crew_failed:
            failure = crew_failed
        except NondeterminismError:
            raise
        except Exception as err:  # noqa: BLE001 - every other path must end the run
            if is_cancelled_exception(err):
                await self._end_cancelled()
                raise
            workflow.logger.exception("Run %s hit an unexpected error", self._run.id)
            failure = CrewFailed(None, _internal(err))
        except asyncio.CancelledError:
            await self._end_cancelled()
            raise
        else:
            self._finish("completed")
            self._notify("run.completed")
            await self._notifier.started()
            return self._run.model_copy(update={"steps": []})
        await self._end_failed(failure)

    # --- scheduling --------------------------------------------------------------

    async def _run_crew(self) -> None:
        first = self._claim_ready()
        if self._chain:
            await self._lane(first[0] if first else None)
        else:
            for order in first:
                self._spawn(order)
            try:
                await self._follow_lanes()
            except asyncio.CancelledError:
                await self._stop_lanes()
                raise
            if self._failure is not None:
                await self._stop_lanes()
                raise self._failure
        last = len(self._start.crew) - 1
        self._run.output = self._outputs[last][1] if last in self._outputs else None

    async def _follow_lanes(self) -> None:
        """Wait for the lanes to finish (or one to fail), publishing what they changed
        in each workflow task where none of them published before it waits."""
        while True:
            await workflow.wait_condition(
                lambda: self._failure is not None or not self._working
                or self._publisher.unpublished
            )
            if self._failure is not None or not self._working:
                return
            self._publisher.flush()

    def _claim_ready(self) -> list[int]:
        """The agents that may start now, in crew order, within `max_parallel`."""
        ready = [
            order for order in range(len(self._start.crew))
            if order not in self._started
            and all(parent in self._outputs for parent in self._parents[order])
        ]
        # At least one: a stored input is never validated again (core/types.py).
        slots = max(self._start.max_parallel, 1)
        claimed = ready[:max(slots - len(self._working), 0)]
        self._started.update(claimed)
        self._working.update(claimed)
        return claimed

    async def _lane(self, order: int | None) -> None:
        """Run steps one after another: this one, then whatever its end made ready
        (starting lanes for the rest)."""
        while order is not None:
            await self._run_step(order)
            self._working.discard(order)
            if self._failure is not None:
                return
            ready = self._claim_ready()
            for other in ready[1:]:
                self._spawn(other)
            order = ready[0] if ready else None

    def _spawn(self, order: int) -> None:
        self._lanes.append(asyncio.create_task(self._guarded_lane(order)))

    async def _guarded_lane(self, order: int) -> None:
        """A lane of a graph: its failure is the run's, told to the main coroutine."""
        try:
            await self._lane(order)
        except CrewFailed as failed:
            self._fail(failed)
        except NondeterminismError as err:
            self._failure = err
        except Exception as err:  # noqa: BLE001 - a lane must not end unnoticed
            if is_cancelled_exception(err):
                raise
            workflow.logger.exception("Run %s hit an unexpected error", self._run.id)
            self._fail(CrewFailed(None, _internal(err)))

    def _fail(self, failed: CrewFailed) -> None:
        if self._failure is None:
            self._failure = failed
        elif failed.step is not None:
            self._end_step(failed.step, failed.reason)

    async def _stop_lanes(self) -> None:
        """Cancel every lane still working (in-flight calls learn it by heartbeat)."""
        for lane in self._lanes:
            lane.cancel()
        await asyncio.gather(*self._lanes, return_exceptions=True)

    # --- one step ----------------------------------------------------------------

    async def _run_step(self, order: int) -> None:
        agent = self._start.crew[order]
        step = Step(
            id=id_from_uuid(STEP_PREFIX, workflow.uuid4()),
            order=order,
            role=agent.role,
            model=agent.model,
            input=self._input_for(order),
            started_at=self._now(),
        )
        progress = self._progress.setdefault(order, StepProgress(order=order))
        # Tokens a failed execution already spent on this step (a retry goes on).
        progress.usage.add_to(step, self._run)
        self._run.steps.append(step)
        self._run.total_steps = len(self._run.steps)
        self._publisher.publish(step)
        self._notify("step.started", step)
        runner = AgentStep(self._start, agent, step, self._run, progress, self._publisher,
                           self._gate)
        try:
            output = await runner.run()
        except StepFailed as failed:
            raise CrewFailed(step, str(failed), restart=failed.restart) from None
        except NondeterminismError:
            raise
        except BaseException as err:
            if isinstance(err, asyncio.CancelledError) or is_cancelled_exception(err):
                self._end_step(step, "cancelled")
                raise
            if not isinstance(err, Exception):
                raise
            workflow.logger.exception("Run %s hit an unexpected error", self._run.id)
            raise CrewFailed(step, _internal(err)) from None
        step.output = output
        step.finished_at = self._now()
        self._outputs[order] = (agent.role, output)
        del self._progress[order]
        self._publisher.publish(step)
        self._notify("step.completed", step)

    def _input_for(self, order: int) -> str:
        ancestors = self._ancestors[order] if self._ancestors is not None else None
        return input_from(self._start.input, order, self._outputs, ancestors)

    def _end_step(self, step: Step, error: str) -> None:
        """A step that stops without output; published with the run's end."""
        step.error = error
        step.finished_at = self._now()
        self._ended.append(step)

    # --- the run's end -----------------------------------------------------------

    async def _end_failed(self, failure: CrewFailed) -> NoReturn:
        """Record the failure in the run and fail the Temporal execution with it."""
        step = failure.step
        self._gate.close_all()
        if step is None:
            self._run.error = f"Run failed: {failure.reason}"
            self._finish("failed", *self._ended, progress=self._carried_progress(None))
        else:
            step.error = failure.reason
            step.finished_at = self._now()
            self._run.error = f"Step {step.order + 1} ({step.role}) failed: {failure.reason}"
            skip = step.order if failure.restart else None
            self._finish("failed", step, *self._ended, progress=self._carried_progress(skip))
            self._notify("step.failed", step)
        self._notify("run.failed")
        await self._notifier.started()
        raise ApplicationError(self._run.error, type=FAILED_RUN, non_retryable=True)

    def _carried_progress(self, restart: int | None) -> list[StepProgress]:
        """The unfinished steps' tool loops that a retry can go on from."""
        return [
            entry for order, entry in sorted(self._progress.items())
            if order != restart and (entry.rounds or entry.response is not None)
        ]

    async def _end_cancelled(self) -> None:
        """Publish the cancellation; the caller re-raises so Temporal records it."""
        # Runs cancelled before this version ended without publishing; replaying them
        # must issue no extra commands.
        if not workflow.patched(PUBLISH_CANCELLED):
            return
        self._gate.close_all()
        self._finish("cancelled", *self._ended)
        self._notify("run.cancelled")
        await self._notifier.started()

    def _finish(self, status: RunStatus, *changed: Step,
                progress: list[StepProgress] | None = None) -> None:
        self._run.finished_at = self._now()
        self._publisher.set_status(status, *changed)
        self._publisher.flush(progress)

    # --- messages ------------------------------------------------------------------

    @workflow.query(name=GET_QUERY)
    def get(self) -> Run:
        """The run as it stands."""
        return self._run

    @workflow.update(name=RESPOND_UPDATE)
    def respond(self, answer: Answer) -> RespondAccepted:
        """A person's answer to one open pause; its branch resumes."""
        self._gate.take(answer)
        if self._run.pauses:
            self._publisher.publish()
        else:
            self._publisher.set_status("running")
        return RespondAccepted(id=self._run.id, status=self._run.status)

    @respond.validator
    def _validate_respond(self, answer: Answer) -> None:
        # Runs inside the workflow, one message at a time: of two answers sent at once
        # to one pause, the second finds it answered and is refused (409).
        self._gate.check(answer)

    # --- helpers -------------------------------------------------------------------

    def _notify(self, kind: RunEventType, step: Step | None = None) -> None:
        self._notifier.notify(kind, self._now(), step)

    def _now(self) -> datetime:
        return truncate_to_millis(workflow.now())


def _internal(err: Exception) -> str:
    return (f"internal error in the run workflow ({type(err).__name__}: {err}); "
            "the worker log has the details")
