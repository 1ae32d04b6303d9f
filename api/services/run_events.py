"""A run's event stream, read from its Temporal history and followed live.

The events come from the memo changes recorded in the run's history
(core/run_events.py), so any API process, before or after a restart, tells the same
events with the same ids. Following a run is one long poll on its history
(`GetWorkflowExecutionHistory` with `waitNewEvent`), answered by the Temporal server the
moment the run records a change: no worker and no query is involved. One follower per
run per API process serves every watcher of that run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from api.services.run_truth import closed_as
from core.run_events import RunEvent, RunEventDeriver
from core.run_memo import RETRY_OF_KEY, RUN_KEY, run_from_memo
from core.types import Run

_CLOSE_EVENTS = frozenset({
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
})
_RESET = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW


class RunEventSource:
    """Reads a run's events from Temporal."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def events(self, run_id: str, latest_execution: str, *, follow: bool
                     ) -> AsyncIterator[RunEvent]:
        """Every event of the run, oldest first; with `follow`, new ones as they happen
        until the run's current execution closes."""
        chain = await self._executions(run_id, latest_execution)
        deriver = RunEventDeriver(run_id)
        for index, (execution, after_reset) in enumerate(chain):
            last = index == len(chain) - 1
            events = self._execution_events(
                run_id, execution, deriver, after_reset=after_reset, follow=follow and last
            )
            async for event in events:
                yield event

    async def _executions(self, run_id: str, latest: str) -> list[tuple[str, bool]]:
        """The run's executions, oldest first, each with whether it came from a reset.

        Each retry made a new one: a new execution that names the one it retries in
        its first memo (today), or a Temporal reset (runs retried before crew graphs).
        """
        chain = [(latest, False)]
        while (found := await self._previous(run_id, chain[0][0])) is not None:
            base, by_reset = found
            chain[0] = (chain[0][0], by_reset)
            chain.insert(0, (base, False))
        return chain

    async def _previous(self, run_id: str, execution: str) -> tuple[str, bool] | None:
        handle = self._client.get_workflow_handle(run_id, run_id=execution)
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                retry_of = event.workflow_execution_started_event_attributes.memo.fields.get(
                    RETRY_OF_KEY)
                if retry_of is not None:
                    (base,) = await self._client.data_converter.decode([retry_of])
                    return str(base), False
            if _is_reset_into(event, execution):
                return event.workflow_task_failed_event_attributes.base_run_id, True
        return None

    async def _execution_events(
        self, run_id: str, execution: str, deriver: RunEventDeriver, *, after_reset: bool,
        follow: bool,
    ) -> AsyncIterator[RunEvent]:
        handle = self._client.get_workflow_handle(run_id, run_id=execution)
        # In a reset execution, what precedes the reset was told by the one before it.
        telling = not after_reset
        async for event in handle.fetch_history_events(wait_new_event=follow):
            if not telling:
                telling = _is_reset_into(event, execution)
                continue
            at = event.event_time.ToDatetime()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                changes = event.workflow_execution_started_event_attributes.memo.fields
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
                changes = event.workflow_properties_modified_event_attributes.upserted_memo.fields
            elif event.event_type in _CLOSE_EVENTS:
                for told in deriver.close(self._closed_run(deriver, event), at):
                    yield told
                continue
            else:
                continue
            decoded = {key: (await self._client.data_converter.decode([payload]))[0]
                       for key, payload in changes.items()}
            for told in deriver.apply(decoded, at):
                yield told

    @staticmethod
    def _closed_run(deriver: RunEventDeriver, event: HistoryEvent) -> Run:
        run = run_from_memo({RUN_KEY: deriver.header}, with_steps=False)
        assert run is not None, "a run's history starts with its memo"
        return closed_as(run, event, event.event_time.ToDatetime())


def _is_reset_into(event: HistoryEvent, execution: str) -> bool:
    attributes = event.workflow_task_failed_event_attributes
    return (event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            and attributes.cause == _RESET and attributes.new_run_id == execution)


@dataclass
class _Follower:
    """The events of one run read so far, shared by every watcher of the run."""

    events: list[RunEvent] = field(default_factory=list)
    done: bool = False
    failed: BaseException | None = None
    watchers: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None


class RunEventHub:
    """Fans each run's events out to every watcher in this API process."""

    def __init__(self, source: RunEventSource) -> None:
        self._source = source
        self._followers: dict[str, _Follower] = {}

    async def watch(self, run_id: str, latest_execution: str, after: int,
                    keepalive: float) -> AsyncIterator[RunEvent | None]:
        """The run's events with ids above `after`, then live ones; None after every
        `keepalive` seconds without one. Ends after the run's end."""
        follower = self._followers.get(run_id)
        if follower is None or follower.done:
            follower = _Follower()
            self._followers[run_id] = follower
            follower.task = asyncio.create_task(self._follow(run_id, latest_execution, follower))
        follower.watchers += 1
        try:
            sent = after
            while True:
                async with follower.changed:
                    if len(follower.events) <= sent and not follower.done:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(follower.changed.wait(), keepalive)
                    # Event ids are 1, 2, 3, ...: the ones not sent yet follow `sent`.
                    fresh, done = follower.events[sent:], follower.done
                if not fresh and not done:
                    yield None
                    continue
                for event in fresh:
                    yield event
                sent += len(fresh)
                if done:
                    if follower.failed is not None:
                        raise follower.failed
                    return
        finally:
            follower.watchers -= 1
            if follower.watchers == 0 and self._followers.get(run_id) is follower:
                del self._followers[run_id]
                if follower.task is not None:
                    follower.task.cancel()

    async def _follow(self, run_id: str, latest_execution: str, follower: _Follower) -> None:
        try:
            async for event in self._source.events(run_id, latest_execution, follow=True):
                async with follower.changed:
                    follower.events.append(event)
                    follower.changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - watchers see it and reconnect
            follower.failed = err
        finally:
            follower.done = True
            async with follower.changed:
                follower.changed.notify_all()
