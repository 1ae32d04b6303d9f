"""Pauses for a person: any number open at once, one per waiting branch, each answered
by its own id.

A branch that waits is a coroutine at `wait_condition`; the others go on. The respond
update's validator runs inside the workflow, one message at a time, so of two answers to
one pause exactly one lands, and an answer names the pause it means (`pause_id`), so it
can never be applied to another.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.contract import NOT_WAITING, STALE_ANSWER, WRONG_ANSWER
    from core.ids import PAUSE_PREFIX, id_from_uuid
    from core.types import (
        Answer,
        Pending,
        Run,
        Step,
        answered_pause,
        respond_problem,
        stale_answer,
    )
    from workflows.failures import StepFailed
    from workflows.run_notifier import RunNotifier
    from workflows.run_publisher import RunPublisher


class HumanGate:
    """The run's open pauses and the answers that close them."""

    def __init__(self, run: Run, timeout_seconds: int | None, publisher: RunPublisher,
                 notifier: RunNotifier, now: Callable[[], datetime]) -> None:
        self._run = run
        self._timeout_seconds = timeout_seconds
        self._publisher = publisher
        self._notifier = notifier
        self._now = now
        self._opened = 0
        self._answers: dict[str, Answer] = {}

    async def ask(self, step: Step, pending: Pending) -> Answer:
        """Open `pending` for `step`, wait for its answer; StepFailed on the timeout."""
        self._opened += 1
        # Deterministic without drawing on the workflow's random numbers (step ids do);
        # Temporal's run id changes on a retry, so a retried step's pauses get new ids.
        pause_id = id_from_uuid(
            PAUSE_PREFIX,
            uuid.uuid5(uuid.NAMESPACE_URL, f"{workflow.info().run_id}/{self._opened}"),
        )
        pending.id, pending.step_id, pending.role = pause_id, step.id, step.role
        self._run.pauses.append(pending)
        self._run.pending = self._run.pauses[0].as_pending()
        self._publisher.set_status("waiting_input")
        self._notifier.notify("run.waiting_input", self._now())
        seconds = self._timeout_seconds
        self._publisher.flush()
        try:
            await workflow.wait_condition(
                lambda: pause_id in self._answers,
                timeout=timedelta(seconds=seconds) if seconds else None,
                timeout_summary="waiting for a human",
            )
        except builtins.TimeoutError:
            self._close(pending)
            raise StepFailed(
                f"timed out after {seconds}s waiting for a human to respond to: "
                f"{pending.prompt}"
            ) from None
        except asyncio.CancelledError:
            self._close(pending)
            raise
        answer = self._answers.pop(pause_id)
        self._notifier.notify("run.resumed", self._now())
        return answer

    def check(self, answer: Answer) -> None:
        """Refuse an answer that fits no open pause (the respond update's validator)."""
        pauses = self._run.pauses
        if not pauses:
            raise ApplicationError(
                f"run is {self._run.status}, not waiting_input", type=NOT_WAITING,
                non_retryable=True,
            )
        pause = answered_pause(pauses, answer)
        if pause is None:
            raise ApplicationError(stale_answer(pauses, answer), type=STALE_ANSWER,
                                   non_retryable=True)
        problem = respond_problem(pause, answer)
        if problem is not None:
            raise ApplicationError(problem, type=WRONG_ANSWER, non_retryable=True)

    def take(self, answer: Answer) -> None:
        """Close the pause `answer` is for and wake its branch (after `check`)."""
        pause = answered_pause(self._run.pauses, answer)
        assert pause is not None and pause.id is not None, "the validator let it through"
        self._close(pause)
        self._answers[pause.id] = answer

    def close_all(self) -> None:
        """The run ends: no pause stays open."""
        self._run.pauses.clear()
        self._run.pending = None

    def _close(self, pause: Pending) -> None:
        self._run.pauses[:] = [other for other in self._run.pauses if other is not pause]
        self._run.pending = self._run.pauses[0].as_pending() if self._run.pauses else None
