"""A crew's newest runs by creation time, from Temporal's visibility store.

SQL visibility cannot sort (no ORDER BY on SQLite); it lists open executions first, then
closed ones by close time, newest first. So the list ranks rows itself, by the
`LoopLlamaCreatedAt` search attribute, and decodes the memos of the winners only, in one
converter call. Rows stay raw protos: the SDK's row objects decode every search
attribute of every row, which cost more than the listing itself.

It reads at most two bounded listings, however many runs the crew has:

1. the first page. A run closes after it is created, so once the listing reaches runs
   that closed more than `skew` before the `limit`-th newest creation time, nothing newer
   can follow: in steady traffic the scan ends here;
2. otherwise (runs that finished close together, e.g. a burst), the runs created at or
   after the `limit`-th newest creation time seen so far: only those can still place.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client, WorkflowExecutionStatus

from api.services.recent_runs import RecentRuns
from api.services.run_truth import reconcile
from api.services.temporal_calls import decode_or_skip
from core.contract import RUN_WORKFLOW_TYPE
from core.run_memo import RUN_KEY, run_from_memo
from core.temporal import SA_CREATED_AT, SA_WORKFLOW_ID
from core.timefmt import format_timestamp
from core.types import Run

LIST_LIMIT = 50
# Enough for the 50 newest and the runs that closed near them, in one page.
LIST_PAGE_SIZE = 100
# Creation times come from the API's clock, close times from Temporal's; allow this much
# skew between them when deciding that no older-closing run can be among the newest.
# Every row closed within it of the 50th place must be read (~0.25 ms of Temporal's time
# each), so it is what NTP keeps clocks within, with room to spare: hosts whose clocks
# differ from Temporal's by more may see a run out of place in the list.
CLOCK_SKEW = timedelta(seconds=1)


class _Ranking:
    """The best `limit` rows by (creation time, id); a retried run counts once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[datetime, str]] = []  # a min-heap of the best
        self._latest: dict[str, WorkflowExecutionInfo] = {}

    @property
    def threshold(self) -> datetime | None:
        """The creation time a run must reach to place, once the ranking is full."""
        return self._heap[0][0] if len(self._heap) >= self.limit else None

    def offer(self, row: WorkflowExecutionInfo) -> None:
        """Rank one listed execution."""
        created = _created_at(row)
        if created is None:
            return  # not a run this API started
        run_id = row.execution.workflow_id
        seen = self._latest.get(run_id)
        if seen is not None:
            # A retry (a reset) leaves the run's earlier executions listed too; the run
            # is its latest execution, and already has its place.
            if row.start_time.ToNanoseconds() > seen.start_time.ToNanoseconds():
                self._latest[run_id] = row
            return
        entry = (created, run_id)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        elif entry > self._heap[0]:
            heapq.heapreplace(self._heap, entry)
        else:
            return
        self._latest[run_id] = row

    def winners(self) -> list[WorkflowExecutionInfo]:
        """The ranked rows, newest first."""
        return [self._latest[run_id] for _, run_id in sorted(self._heap, reverse=True)]


def _created_at(row: WorkflowExecutionInfo) -> datetime | None:
    payload = row.search_attributes.indexed_fields.get(SA_CREATED_AT.name)
    if payload is None:
        return None
    try:
        return datetime.fromisoformat(json.loads(payload.data))
    except (ValueError, TypeError):
        return None


def _close_time(row: WorkflowExecutionInfo) -> datetime | None:
    return row.close_time.ToDatetime(tzinfo=UTC) if row.HasField("close_time") else None


async def _page(client: Client, query: str, page_size: int, token: bytes = b"") -> tuple[
        Sequence[WorkflowExecutionInfo], bytes]:
    """One page of the listing, and the token of the next (empty after the last)."""
    response = await client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(namespace=client.namespace, page_size=page_size,
                                      next_page_token=token, query=query),
        retry=True,
    )
    return response.executions, response.next_page_token


async def newest_runs(
    client: Client, workflow_id: str, limit: int = LIST_LIMIT, *,
    skew: timedelta = CLOCK_SKEW, page_size: int = LIST_PAGE_SIZE,
) -> list[Run]:
    """The `limit` newest runs of crew `workflow_id` by creation time, newest first."""
    crew = f"WorkflowType = '{RUN_WORKFLOW_TYPE}' AND {SA_WORKFLOW_ID.name} = '{workflow_id}'"
    ranking = _Ranking(limit)
    await _rank(client, crew, ranking, skew, page_size)
    return await _decoded(client, ranking.winners())


def _created_since(query: str, moment: datetime) -> str:
    return f"{query} AND {SA_CREATED_AT.name} >= '{format_timestamp(moment)}'"


async def _rank(client: Client, query: str, ranking: _Ranking, skew: timedelta,
                page_size: int) -> None:
    """Offer the rows of `query` that can still place (see the module doc)."""
    first, token = await _page(client, query, page_size)
    if _ranked_to_the_end(first, ranking, skew) or not token:
        return
    threshold = ranking.threshold
    # With the ranking full, only runs created since its last place can still place;
    # otherwise (a page smaller than the limit) every run is a candidate.
    rest = query if threshold is None else _created_since(query, threshold)
    page, token = await _page(client, rest, page_size)
    while True:
        for row in page:
            ranking.offer(row)
        if not token:
            return
        page, token = await _page(client, rest, page_size, token)


def _ranked_to_the_end(page: Sequence[WorkflowExecutionInfo], ranking: _Ranking,
                       skew: timedelta) -> bool:
    """Rank a first page; True when nothing after it can place (see the module doc)."""
    last_close: datetime | None = None
    for row in page:
        close = _close_time(row)
        if close is not None:
            if last_close is not None and close > last_close:
                # Not the order SQL visibility lists in: no early stop is safe.
                return False
            last_close = close
            threshold = ranking.threshold
            if threshold is not None and close < threshold - skew:
                return True
        ranking.offer(row)
    return False


async def _decoded(client: Client, rows: list[WorkflowExecutionInfo]) -> list[Run]:
    """The rows' runs (headers only: list items have no steps, and step entries are most
    of a long run's memo), reconciled with how their executions stand."""
    present = [(row, row.memo.fields[RUN_KEY]) for row in rows if RUN_KEY in row.memo.fields]
    try:
        headers = await client.data_converter.decode([p for _, p in present])
    except Exception:  # noqa: BLE001 - find the undecodable rows one by one
        headers = [await decode_or_skip(client, p, row.execution.workflow_id)
                   for row, p in present]
    runs = []
    for (row, _), header in zip(present, headers, strict=True):
        run = run_from_memo({RUN_KEY: header}, with_steps=False) if header is not None else None
        if run is not None:
            runs.append(reconcile(client, run, WorkflowExecutionStatus(row.status),
                                  _close_time(row), row.execution.run_id))
    return list(await asyncio.gather(*runs))


async def settled_newest_runs(client: Client, recent: RecentRuns, workflow_id: str) -> list[Run]:
    """The list, once it shows every run this process started for the crew."""
    await recent.settle(client, workflow_id)
    return await newest_runs(client, workflow_id)
