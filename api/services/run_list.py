"""A crew's newest runs by creation time, from Temporal's visibility store.

SQL visibility cannot sort (no ORDER BY on SQLite); it lists open executions first, then
closed ones by close time, newest first. So the list ranks rows itself, by the
`LoopLlamaCreatedAt` search attribute, and decodes the memos of the winners only, in one
converter call. Rows stay raw protos: the SDK's row objects decode every search
attribute of every row, which cost more than the listing itself.

Each ranking reads at most two bounded listings, however many runs the crew has (and
one ranking is all it takes unless unreadable rows leave the list short, see below):

1. the first page. A run closes after it is created, so once the listing reaches runs
   that closed more than `skew` before the `limit`-th newest creation time, nothing newer
   can follow: in steady traffic the scan ends here;
2. otherwise (runs that finished close together, e.g. a burst), the runs created at or
   after the `limit`-th newest creation time seen so far: only those can still place.

Rows it cannot read are left out and logged, whatever the reason: an execution that is
not a run's (started in Temporal by hand), a memo this process cannot decode or that
does not validate as a run, one that describes another run or disagrees with its row's
creation time, a run whose end cannot be read. The next rows take their places: rows are
read in rank order until the list is full, and when the ranking runs out first it runs
again for twice as many (at most `MAX_RANKINGS` times).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.client import Client, WorkflowExecutionStatus

from api.services.recent_runs import RecentRuns
from api.services.run_truth import reconcile
from api.services.temporal_calls import decode_rows, left_out, list_page
from core.contract import RUN_WORKFLOW_TYPE
from core.ids import RUN_PREFIX, looks_like
from core.run_memo import RUN_KEY, UnreadableRun, read_run
from core.temporal import SA_CREATED_AT, SA_WORKFLOW_ID
from core.timefmt import format_timestamp, truncate_to_millis
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
# Rows among the newest that cannot be read (see `_read`) are left out; when that leaves
# the list short, the ranking runs again for twice as many, this many times at most (up
# to 8 x 50 rows): a crew whose newest rows are mostly unreadable lists what it found.
MAX_RANKINGS = 4

log = logging.getLogger("loopllama.api")


class _Ranking:
    """The best `limit` rows by (creation time, id); a retried run counts once."""

    def __init__(self, limit: int, refused: set[str] | None = None) -> None:
        self.limit = limit
        self._heap: list[tuple[datetime, str]] = []  # a min-heap of the best
        self._latest: dict[str, WorkflowExecutionInfo] = {}
        # Rows left out as not a run's (logged once, however often they are listed).
        self._refused = refused if refused is not None else set()

    @property
    def threshold(self) -> datetime | None:
        """The creation time a run must reach to place, once the ranking is full."""
        return self._heap[0][0] if len(self._heap) >= self.limit else None

    def offer(self, row: WorkflowExecutionInfo) -> None:
        """Rank one listed execution."""
        run_id = row.execution.workflow_id
        created = _created_at(row)
        if created is None or not looks_like(RUN_PREFIX, run_id):
            # Not a run this API started (one started in Temporal by hand, say).
            if run_id not in self._refused:
                self._refused.add(run_id)
                left_out(run_id, "it is not a run's execution (no LoopLlama run id or "
                         f"no {SA_CREATED_AT.name})")
            return
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
        created = datetime.fromisoformat(json.loads(payload.data))
    except (ValueError, TypeError):
        return None
    # Temporal answers in UTC; a time without a zone would not compare with the others.
    return created if created.tzinfo is not None else None


def _close_time(row: WorkflowExecutionInfo) -> datetime | None:
    return row.close_time.ToDatetime(tzinfo=UTC) if row.HasField("close_time") else None


def _key(row: WorkflowExecutionInfo) -> tuple[str, str]:
    return row.execution.workflow_id, row.execution.run_id


async def newest_runs(
    client: Client, workflow_id: str, limit: int = LIST_LIMIT, *,
    skew: timedelta = CLOCK_SKEW, page_size: int = LIST_PAGE_SIZE,
) -> list[Run]:
    """The `limit` newest readable runs of crew `workflow_id` by creation time, newest
    first. Rows that cannot be read are left out (and logged) and the next ones take
    their places."""
    crew = f"WorkflowType = '{RUN_WORKFLOW_TYPE}' AND {SA_WORKFLOW_ID.name} = '{workflow_id}'"
    read: dict[tuple[str, str], Run | None] = {}
    refused: set[str] = set()
    wanted = limit
    runs: list[Run] = []
    for _ in range(MAX_RANKINGS):
        ranking = _Ranking(wanted, refused)
        await _rank(client, crew, ranking, skew, page_size)
        winners = ranking.winners()
        runs = await _first_readable(client, workflow_id, winners, limit, read)
        if len(runs) >= limit or len(winners) < wanted:
            return runs  # full, or there is nothing more to rank
        # Unreadable rows took places among the winners: rank twice as many.
        wanted *= 2
    log.warning("Listed %d of the %d newest runs of %s: too many of its newest rows "
                "cannot be read.", len(runs), limit, repr(workflow_id))
    return runs


async def _first_readable(client: Client, workflow_id: str,
                          winners: list[WorkflowExecutionInfo], limit: int,
                          read: dict[tuple[str, str], Run | None]) -> list[Run]:
    """The first `limit` readable runs among `winners`, in their order, reading only as
    many rows as it takes (and no row `read` already holds)."""
    runs: list[Run] = []
    index = 0
    while index < len(winners) and len(runs) < limit:
        batch = winners[index:index + limit - len(runs)]
        index += len(batch)
        fresh = [row for row in batch if _key(row) not in read]
        if fresh:
            read.update(zip(map(_key, fresh), await _read(client, workflow_id, fresh),
                            strict=True))
        runs.extend(run for row in batch if (run := read[_key(row)]) is not None)
    return runs


def _created_since(query: str, moment: datetime) -> str:
    return f"{query} AND {SA_CREATED_AT.name} >= '{format_timestamp(moment)}'"


async def _rank(client: Client, query: str, ranking: _Ranking, skew: timedelta,
                page_size: int) -> None:
    """Offer the rows of `query` that can still place (see the module doc)."""
    first, token = await list_page(client, query, page_size)
    if _ranked_to_the_end(first, ranking, skew) or not token:
        return
    threshold = ranking.threshold
    # With the ranking full, only runs created since its last place can still place;
    # otherwise (a page smaller than the limit) every run is a candidate.
    rest = query if threshold is None else _created_since(query, threshold)
    page, token = await list_page(client, rest, page_size)
    while True:
        for row in page:
            ranking.offer(row)
        if not token:
            return
        page, token = await list_page(client, rest, page_size, token)


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


async def _read(client: Client, workflow_id: str, rows: list[WorkflowExecutionInfo]
                ) -> list[Run | None]:
    """Each row's run (headers only: list items have no steps, and step entries are most
    of a long run's memo), reconciled with how its execution stands; None, logged, for a
    row that cannot be read, whatever the reason."""
    present = [row for row in rows if RUN_KEY in row.memo.fields]
    headers = await decode_rows(
        client, [(row.execution.workflow_id, row.memo.fields[RUN_KEY]) for row in present])
    decoded = dict(zip(map(_key, present), headers, strict=True))
    runs: list[Coroutine[Any, Any, Run | None]] = []
    for row in rows:
        if _key(row) not in decoded:
            left_out(row.execution.workflow_id, f"its memo has no {RUN_KEY!r} entry")
            runs.append(_nothing())
            continue
        header = decoded[_key(row)]
        if header is None:
            runs.append(_nothing())  # undecodable; decode_rows said so
            continue
        runs.append(_reconciled(client, workflow_id, row, header))
    return list(await asyncio.gather(*runs))


async def _nothing() -> Run | None:
    return None


async def _reconciled(client: Client, workflow_id: str, row: WorkflowExecutionInfo,
                      header: object) -> Run | None:
    """The row's run as its execution stands, or None (logged) when it cannot be read."""
    run_id = row.execution.workflow_id
    try:
        run = read_run({RUN_KEY: header}, with_steps=False)
        _check_belongs(run, row, workflow_id)
    except UnreadableRun as err:
        left_out(run_id, str(err))
        return None
    try:
        return await reconcile(client, run, WorkflowExecutionStatus(row.status),
                               _close_time(row), row.execution.run_id)
    except Exception as err:  # noqa: BLE001 - one row must not fail the list, whatever it is
        left_out(run_id, f"how its execution ended cannot be read ({type(err).__name__})")
        return None


def _check_belongs(run: Run, row: WorkflowExecutionInfo, workflow_id: str) -> None:
    """Refuse a run whose memo does not match the row it came from: listed, it would be
    another run's double, another crew's, or out of the order the list is ranked in."""
    if run.id != row.execution.workflow_id:
        raise UnreadableRun("its memo describes another run")
    if run.workflow_id != workflow_id:
        raise UnreadableRun("its memo describes a run of another workflow")
    created = _created_at(row)
    if created is None or truncate_to_millis(created) != truncate_to_millis(run.created_at):
        raise UnreadableRun(f"its memo's created_at is not its {SA_CREATED_AT.name}")


async def settled_newest_runs(client: Client, recent: RecentRuns, workflow_id: str) -> list[Run]:
    """The list, once it shows every run this process started for the crew."""
    await recent.settle(client, workflow_id)
    return await newest_runs(client, workflow_id)
