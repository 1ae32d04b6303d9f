"""A run's events, derived from the states its memo went through.

A run publishes its header and its steps in its memo, and every change is a
`WorkflowPropertiesModified` event in its Temporal history. Feeding those changes, in
history order, through `RunEventDeriver` yields the run's events: the same events, in the
same order, with the same ids, for every reader and every time it is read, because the
history never changes. A retried run (a Temporal reset) goes on from where its failed
execution ended: the deriver is fed the new execution's changes after the reset, so the
events before the retry keep their ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from core.prompts import input_from
from core.run_memo import GRAPH_KEY, RUN_KEY, graph_from_memo, step_order
from core.timefmt import format_timestamp, truncate_to_millis
from core.types import TERMINAL_STATUSES, RunEventType, RunSummary, Step, Timestamp

_TERMINAL_EVENT: dict[str, RunEventType] = {
    "completed": "run.completed", "failed": "run.failed", "cancelled": "run.cancelled",
}


class RunEvent(BaseModel):
    """One event of a run, as the event stream sends it."""

    id: int
    type: RunEventType
    run_id: str
    created_at: Timestamp
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        """Whether the run ended with this event (a retry may start it again)."""
        return self.type in _TERMINAL_EVENT.values()

    def payload(self) -> dict[str, Any]:
        """The JSON object sent as the event's data."""
        return {"type": self.type, "run_id": self.run_id,
                "created_at": format_timestamp(self.created_at), "data": self.data}

    def sse(self) -> str:
        """The event in Server-Sent Events framing."""
        body = json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.type}\ndata: {body}\n\n"


class RunEventDeriver:
    """Turns a run's successive memo changes into its events."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.last_id = 0
        self._header: dict[str, Any] = {}
        self._steps: dict[int, dict[str, Any]] = {}
        # What the events so far have told: the run's status and pause, each step's
        # (id, completed, failed).
        self._status = "queued"
        self._pauses: list[str] = []
        self._told: dict[int, tuple[str, bool, bool]] = {}
        # Each step's ancestors, for a crew that is not a chain (None: a chain).
        self._ancestors: list[list[int]] | None = None

    @property
    def header(self) -> dict[str, Any]:
        """The run's header as last published."""
        return self._header

    @property
    def ended(self) -> bool:
        """Whether the last event told the run's end."""
        return self._status in TERMINAL_STATUSES

    def apply(self, changes: Mapping[str, Any], at: datetime) -> list[RunEvent]:
        """The events that memo `changes` (decoded entries) made at time `at`."""
        for key, value in changes.items():
            if not isinstance(value, dict):
                continue
            if key == RUN_KEY:
                self._header = value
            elif (order := step_order(key)) is not None:
                self._steps[order] = value
        if GRAPH_KEY in changes:
            self._ancestors = graph_from_memo(changes)
        if not self._header:
            return []
        status = str(self._header.get("status", "queued"))
        pauses = _open_pauses(self._header)
        opened = [pause for pause in pauses if pause not in self._pauses]
        closed = [pause for pause in self._pauses if pause not in pauses]
        events: list[tuple[RunEventType, dict[str, Any]]] = []
        if (status != self._status and self._status in ("queued", *TERMINAL_STATUSES)
                and status != "queued"):
            # The first start, or going on again after a retry.
            events.append(("run.started", self._run_data()))
        events.extend(("run.resumed", self._run_data()) for _ in closed)
        if status != "queued":
            # A fork is queued with its reused steps already in its memo: they are told
            # after `run.started`, as its first steps.
            events.extend(self._step_events())
        events.extend(("run.waiting_input", self._run_data()) for _ in opened)
        if status != self._status and status in _TERMINAL_EVENT:
            events.append((_TERMINAL_EVENT[status], self._run_data()))
        self._status, self._pauses = status, pauses
        return [self._event(kind, data, at) for kind, data in events]

    def close(self, run: RunSummary, at: datetime) -> list[RunEvent]:
        """The end of a run whose execution closed without publishing it (terminated,
        timed out or cancelled from Temporal): `run` as reads reconcile it."""
        if self.ended or run.status not in _TERMINAL_EVENT:
            return []
        self._header = run.model_dump(mode="json")
        self._status, self._pauses = run.status, []
        return [self._event(_TERMINAL_EVENT[run.status], self._run_data(), at)]

    def _step_events(self) -> list[tuple[RunEventType, dict[str, Any]]]:
        events: list[tuple[RunEventType, dict[str, Any]]] = []
        for order in sorted(self._steps):
            step = self._steps[order]
            now = (str(step.get("id")), step.get("output") is not None,
                   step.get("error") is not None)
            told = self._told.get(order)
            if told == now:
                continue
            if told is None or told[0] != now[0]:
                events.append(("step.started", self._step_data(order)))
                told = (now[0], False, False)
            if now[1] and not told[1]:
                events.append(("step.completed", self._step_data(order)))
            if now[2] and not told[2]:
                events.append(("step.failed", self._step_data(order)))
            self._told[order] = now
        return events

    def _run_data(self) -> dict[str, Any]:
        data = dict(self._header)
        data.pop("steps", None)
        return RunSummary.model_validate(data).model_dump(mode="json")

    def _step_data(self, order: int) -> dict[str, Any]:
        outputs = {o: (str(step.get("role")), str(step.get("output") or ""))
                   for o, step in self._steps.items()}
        ancestors = self._ancestors[order] if self._ancestors else None
        step = {**self._steps[order], "input": input_from(
            str(self._header.get("input", "")), order, outputs, ancestors)}
        return Step.model_validate(step).model_dump(mode="json")

    def _event(self, kind: RunEventType, data: dict[str, Any], at: datetime) -> RunEvent:
        self.last_id += 1
        return RunEvent(id=self.last_id, type=kind, run_id=self.run_id,
                        created_at=truncate_to_millis(at), data=data)


def _open_pauses(header: Mapping[str, Any]) -> list[str]:
    """The open pauses a run header lists, each told by its id (older runs: by the
    prompt of their one `pending`)."""
    pauses = header.get("pauses")
    if not isinstance(pauses, list) or not pauses:
        pending = header.get("pending")
        pauses = [pending] if isinstance(pending, dict) else []
    return [str(pause.get("id") or pause.get("prompt")) for pause in pauses
            if isinstance(pause, dict)]
