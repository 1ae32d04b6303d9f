"""Runs this API process started whose rows may not be in list queries yet.

Temporal's visibility store (what list queries read) trails a start by ~10 ms. A trigger
used to wait for its run to show up before answering, at the price of a count query
(~6 ms of Temporal's CPU, a tenth of what a whole run costs it) on every trigger. Now
the trigger answers at once and notes the run here; a list of the same crew waits for
the runs noted for it instead, so "trigger, then list" still shows the run, and the
wait is paid only when somebody lists that soon after triggering.

The note lives in this process: a list served by another API process right after a
trigger may miss the run for those milliseconds (README, "Running in production").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from temporalio.client import Client

from api.services.temporal_calls import VISIBILITY_WAIT_SECONDS, wait_until_listed


class RecentRuns:
    """Per crew, the runs started here in the last `horizon` seconds not yet seen listed.

    Past `horizon` a run is listed (or visibility is so far behind that waiting longer in
    a request would not help), so notes expire without a query, and every new note
    sweeps out the expired ones: the notes never outgrow `horizon` seconds of triggers.
    """

    def __init__(self, horizon: float = VISIBILITY_WAIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._horizon = horizon
        self._clock = clock
        self._pending: dict[str, dict[str, float]] = {}
        self._expiry: deque[tuple[float, str, str]] = deque()  # in order of deadline

    def __len__(self) -> int:
        return sum(len(runs) for runs in self._pending.values())

    def started(self, crew_id: str, run_id: str) -> None:
        """Note a run of `crew_id` that this process has just started."""
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, old_crew, old_run = self._expiry.popleft()
            self.listed(old_crew, [old_run])
        deadline = now + self._horizon
        self._pending.setdefault(crew_id, {})[run_id] = deadline
        self._expiry.append((deadline, crew_id, run_id))

    def pending(self, crew_id: str) -> list[str]:
        """The runs of `crew_id` that may not be listed yet (expired notes dropped)."""
        runs = self._pending.get(crew_id)
        if not runs:
            return []
        now = self._clock()
        for run_id in [r for r, deadline in runs.items() if deadline <= now]:
            del runs[run_id]
        if not runs:
            del self._pending[crew_id]
            return []
        return list(runs)

    def listed(self, crew_id: str, run_ids: list[str]) -> None:
        """Forget runs that list queries now show."""
        runs = self._pending.get(crew_id, {})
        for run_id in run_ids:
            runs.pop(run_id, None)
        if not runs:
            self._pending.pop(crew_id, None)

    async def settle(self, client: Client, crew_id: str) -> None:
        """Return once list queries show every run of `crew_id` noted here, or once the
        notes expire. One count query per look, however many runs are pending."""
        run_ids = self.pending(crew_id)
        if not run_ids:
            return
        last_deadline = max(self._pending[crew_id].values())
        if await wait_until_listed(client, run_ids, within=last_deadline - self._clock(),
                                   first_look=0):
            self.listed(crew_id, run_ids)
