"""A crash campaign: 50 crews run while their worker is SIGKILLed about ten times.

Every run is a three-agent crew: a planner and a reviewer that make one plain model call
each, and a mailer whose `send_email` call needs an approval and goes to a real SMTP
server (two model calls: the tool call, then its answer). The worker is a real child
process (`loopllama worker`), SIGKILLed at seeded random moments while the runs are in
flight and restarted each time; runs are triggered at random moments too, so the kills
land on every stage. The test approves every pause over the API as it appears.

What must hold afterwards, and how it is told apart from a legitimate retry:

- Every run completes, with each agent's scripted output and token totals that count
  every model answer exactly once.
- No completed model call is sent again. A model call is one body (run, agent, round);
  Temporal's history says when its activity completed and after how many attempts, the
  fake says when each copy of the body arrived. No copy may arrive after the completion,
  there are no more copies than attempts, and every copy but the first must follow a
  kill that came after the copy before it was sent: that call was in flight when the
  worker died, the one case the README allows a re-send.
- Every approved email is delivered once, or twice with the same Message-ID and
  idempotency key (the documented window: the worker died after the mail server
  accepted it and before Temporal recorded that), never more often than its activity
  was attempted.
- Every run paused exactly once and its history holds exactly one accepted answer.

The figures are printed (`pytest -s`) and repeated in every assertion message. The seed is
printed too; `CRASH_CAMPAIGN_SEED=<seed>` replays the same schedule (the same trigger and
kill moments and model delays; the machine's timing still varies).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.settings import Secret, Settings
from core.types import ModelRequest
from tests.conftest import crew, eventually, start_worker_process, unique_tag
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    Predicate,
    RecordedRequest,
    Reply,
    content_text,
    echo_reply,
    system_text,
    text_reply,
    tool_use_reply,
)
from tests.fakes.smtp_server import FakeSmtp, Received
from tests.helpers import create_workflow, get_run, reaped, trigger

RUNS = 50
KILLS = 10
# Runs are triggered at random moments over this window, so kills meet them at every stage.
TRIGGER_WINDOW = (0.0, 35.0)
# Each kill comes this long after the worker it kills started polling.
KILL_GAP = (0.5, 3.5)
# Each model answer takes this long, so kills often find calls in flight.
MODEL_DELAY = (0.05, 1.2)
APPROVE_POLL_SECONDS = 0.3
# The fake records a request once its handler thread has read it; on a busy machine that
# can come a little after a kill the request itself preceded (the bytes were on their way).
RECORD_LAG = 1.0
CAMPAIGN_DEADLINE = 150.0
TERMINAL = {"completed", "failed", "cancelled"}
READY_LINE = "LoopLlama worker polling"

ROLES = ("planner", "mailer", "reviewer")
# (role, round) of every model call a run makes, with the tokens its answer reports.
CALLS: dict[tuple[str, int], tuple[int, int]] = {
    ("planner", 0): (3, 2),
    ("mailer", 0): (5, 4),
    ("mailer", 1): (7, 6),
    ("reviewer", 0): (11, 10),
}
RUN_TOKENS = (sum(t[0] for t in CALLS.values()), sum(t[1] for t in CALLS.values()))

ROLE_MARK = re.compile(r"You are the (\w+)\. \[(\w+)\]")
RUN_MARK = re.compile(r"<<run (\d+)>>")

Key = tuple[int, str, int]
"""One model call of the campaign: (run number, agent role, tool round)."""


# ------------------------------------------------------------------------ the script


class Script:
    """What the fake model answers each call of each run, the same on every copy."""

    def __init__(self, tag: str, rng: random.Random) -> None:
        self.tag = tag
        self.keys: list[Key] = [(run, role, round_) for run in range(RUNS)
                                for role, round_ in CALLS]
        self.delays = {key: rng.uniform(*MODEL_DELAY) for key in self.keys}
        self.scripted: list[Reply] = []

    @staticmethod
    def input(run: int) -> str:
        return f"<<run {run:02d}>> Plan the launch, email Bob about it, review it."

    def email(self, run: int) -> dict[str, str]:
        return {"to": f"bob{run:02d}@example.com", "subject": f"Launch {self.tag} {run:02d}",
                "body": f"Run {run:02d}: we launch on Monday."}

    @staticmethod
    def output(run: int, role: str) -> str:
        return f"{role} done for {run:02d}"

    def key_of(self, body: dict[str, Any]) -> Key | None:
        """Which call of this campaign a request (or a recorded ModelRequest) is."""
        role = ROLE_MARK.search(system_text(body))
        messages = body.get("messages")
        if role is None or role.group(2) != self.tag or not isinstance(messages, list):
            return None
        run = RUN_MARK.search(content_text(messages[0].get("content")) if messages else "")
        if run is None:
            return None
        return int(run.group(1)), role.group(1), (len(messages) - 1) // 2

    def matcher(self, key: Key) -> Predicate:
        """A `when=` predicate: requests that are this call."""
        return lambda body: self.key_of(body) == key

    def reply(self, key: Key, when: Predicate | None = None) -> Reply:
        run, role, round_ = key
        tokens_in, tokens_out = CALLS[(role, round_)]
        if (role, round_) == ("mailer", 0):
            return tool_use_reply(
                "send_email", self.email(run), tool_use_id=f"toolu_{self.tag}{run:02d}",
                tokens_in=tokens_in, tokens_out=tokens_out, delay=self.delays[key], when=when,
            )
        return text_reply(self.output(run, role), tokens_in=tokens_in, tokens_out=tokens_out,
                          delay=self.delays[key], when=when)

    def enqueue(self, fake: FakeAnthropic, run: int) -> None:
        """One scripted answer per call the run needs, each taken only by its own call."""
        for key in self.keys:
            if key[0] == run:
                self.scripted.append(fake.enqueue(self.reply(key, when=self.matcher(key))))

    def resend(self, body: dict[str, Any]) -> Reply:
        """The fake's default handler: a re-sent call (its scripted answer was taken by the
        copy that died with the worker) gets the same answer; anything else an echo."""
        key = self.key_of(body)
        return self.reply(key) if key in self.delays else echo_reply(body)


# ------------------------------------------------------------------ the worker process


class Workers:
    """The one worker process, started, SIGKILLed and restarted."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log = logs / "worker-0.log"
        self.kills: list[float] = []  # time.monotonic(), the fake's clock
        self.startup: list[float] = []
        self._started = 0.0

    def start(self) -> None:
        self.log = self.logs / f"worker-{len(self.processes) + 1}.log"
        self.processes.append(start_worker_process(self.settings, self.log))
        self._started = time.monotonic()

    async def ready(self) -> None:
        """Wait until the current worker polls its task queue."""
        log, process = self.log, self.processes[-1]

        async def polling() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited early:\n{log.read_text()}")
            return log.exists() and READY_LINE in log.read_text()

        await eventually(polling, within=60, interval=0.05)
        self.startup.append(time.monotonic() - self._started)

    def kill_and_restart(self) -> None:
        process = self.processes[-1]
        self.kills.append(time.monotonic())
        process.kill()
        process.wait(timeout=10)
        self.start()


# ---------------------------------------------------------------------------- figures


@dataclass
class Figures:
    seed: int
    began: float
    runs: int = 0
    completed: int = 0
    kills: int = 0
    kills_mid_call: int = 0
    worker_start_seconds: float = 0.0
    model_calls: int = 0
    model_requests: int = 0
    resent_in_flight: int = 0
    resent_after_answer: int = 0
    completed_resent: int = 0
    model_attempts: int = 0
    approvals: Counter[int] = field(default_factory=Counter)
    applied_after_503: int = 0
    emails: int = 0
    emails_twice_same_id: int = 0
    email_attempts: int = 0
    campaign_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __str__(self) -> str:
        return "\n".join([
            f"crash campaign (seed {self.seed}, CRASH_CAMPAIGN_SEED={self.seed} to replay):",
            f"  runs                      {self.completed}/{self.runs} completed",
            f"  worker kills              {self.kills} (SIGKILL; {self.kills_mid_call} "
            f"with a model call in flight; restart to polling ~{self.worker_start_seconds:.1f}s)",
            f"  model calls               {self.model_calls} distinct, "
            f"{self.model_requests} requests, {self.model_attempts} activity attempts",
            f"  re-sent (in flight)       {self.resent_in_flight} "
            f"({self.resent_after_answer} after the fake had answered)",
            f"  completed calls re-sent   {self.completed_resent}",
            f"  approvals (HTTP status)   {dict(sorted(self.approvals.items()))}; "
            f"{self.applied_after_503} runs took an approval that had answered 503",
            f"  emails                    {self.emails} delivered for {self.runs} runs, "
            f"{self.email_attempts} send_email attempts",
            f"  duplicates (same Msg-ID)  {self.emails_twice_same_id}",
            f"  wall time                 {self.campaign_seconds:.1f}s campaign, "
            f"{self.wall_seconds:.1f}s with checks",
        ])


# ------------------------------------------------------------------------------- test


async def test_crash_campaign(
    api: httpx.AsyncClient, settings: Settings, temporal: Client,
    fake_anthropic: FakeAnthropic, tmp_path: Path,
) -> None:
    began = time.monotonic()
    seed = int(os.environ.get("CRASH_CAMPAIGN_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\ncrash campaign seed: {seed}")
    rng = random.Random(seed)
    trigger_at = sorted(rng.uniform(*TRIGGER_WINDOW) for _ in range(RUNS))
    kill_gaps = [rng.uniform(*KILL_GAP) for _ in range(KILLS)]
    tag = unique_tag()
    script = Script(tag, rng)
    figures = Figures(seed=seed, began=began, runs=RUNS)

    with FakeSmtp() as smtp:
        own = replace(settings, smtp_url=Secret(smtp.url), smtp_from="crew@example.com")
        workers = Workers(own, tmp_path)
        fake_anthropic.set_default(script.resend)
        try:
            with reaped(workers.processes):
                workers.start()
                await workers.ready()
                workflow = await create_workflow(
                    api,
                    [*crew("planner", tag=tag),
                     *crew("mailer", tag=tag, tools=["send_email"]),
                     *crew("reviewer", tag=tag)],
                    human_in_the_loop={"approval_required_tools": ["send_email"]},
                )
                started = time.monotonic()
                run_ids, pauses = await campaign(
                    api, workflow["id"], fake_anthropic, script, workers, trigger_at,
                    kill_gaps, figures,
                )
                figures.campaign_seconds = time.monotonic() - started
        finally:
            fake_anthropic.set_default(None)
        figures.kills = len(workers.kills)
        figures.worker_start_seconds = sum(workers.startup) / len(workers.startup)
        await check(api, temporal, fake_anthropic, smtp.messages(), script, workers, run_ids,
                    pauses, figures)


async def campaign(
    api: httpx.AsyncClient, workflow_id: str, fake: FakeAnthropic, script: Script,
    workers: Workers, trigger_at: list[float], kill_gaps: list[float], figures: Figures,
) -> tuple[dict[int, str], dict[str, set[str]]]:
    """Trigger, kill and approve until every run has ended; the run ids and the pause
    ids seen per run."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    run_ids: dict[int, str] = {}
    pauses: dict[str, set[str]] = defaultdict(set)
    statuses: dict[str, list[int]] = defaultdict(list)
    ended = asyncio.Event()

    async def triggers() -> None:
        for run, at in enumerate(trigger_at):
            # A schedule, not a wait for a condition: the moment is the point.
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            script.enqueue(fake, run)
            run_ids[run] = str((await trigger(api, workflow_id, script.input(run)))["id"])

    async def kills() -> None:
        for gap in kill_gaps:
            await workers.ready()
            try:
                await asyncio.wait_for(ended.wait(), gap)
                return
            except TimeoutError:
                workers.kill_and_restart()

    async def approve(run_id: str, pause_id: str) -> None:
        response = await api.post(f"/v1/runs/{run_id}/respond",
                                  json={"action": "approve", "pause_id": pause_id})
        figures.approvals[response.status_code] += 1
        statuses[run_id].append(response.status_code)

    async def approvals() -> None:
        answering: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                response = await api.get(f"/v1/workflows/{workflow_id}/runs")
                assert response.status_code == 200, response.text
                rows = response.json()["data"]
                for row in rows:
                    pending = row["pending"]
                    if row["status"] != "waiting_input" or pending is None:
                        continue
                    pauses[row["id"]].add(pending["id"])
                    busy = answering.get(row["id"])
                    if busy is None or busy.done():
                        answering[row["id"]] = asyncio.create_task(
                            approve(row["id"], pending["id"])
                        )
                if len(run_ids) == len(rows) == RUNS and all(
                    row["status"] in TERMINAL for row in rows
                ):
                    ended.set()
                    return
                await asyncio.sleep(APPROVE_POLL_SECONDS)
        finally:
            await asyncio.gather(*answering.values())

    tasks = [asyncio.create_task(job()) for job in (triggers, kills, approvals)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), CAMPAIGN_DEADLINE)
    except TimeoutError:
        stuck = {}
        for run, run_id in run_ids.items():
            current = await get_run(api, run_id)
            if current["status"] not in TERMINAL:
                stuck[run] = (run_id, current["status"], len(current["steps"]))
        figures.kills = len(workers.kills)
        raise AssertionError(
            f"runs still open after {CAMPAIGN_DEADLINE}s: {stuck}\n{figures}"
        ) from None
    finally:
        for task in tasks:
            task.cancel()
    # A respond that timed out waiting for a worker (503) may still be applied once one
    # polls again: the run then moves on without any 202.
    figures.applied_after_503 = sum(
        503 in codes and 202 not in codes for codes in statuses.values()
    )
    return run_ids, pauses


# ----------------------------------------------------------------------------- checks


@dataclass
class Activity:
    """One activity of a run's history."""

    name: str
    key: Key | None = None
    attempt: int = 0
    completions: int = 0
    completed_at: float = 0.0


async def history_activities(
    temporal: Client, script: Script, run_id: str
) -> tuple[list[Activity], int]:
    """Every activity the run scheduled, and how many answers (updates) it accepted."""
    history = await temporal.get_workflow_handle(run_id).fetch_history()
    activities: dict[int, Activity] = {}
    accepted = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            activity = Activity(attrs.activity_type.name)
            if activity.name == "model_call":
                (request,) = await temporal.data_converter.decode(
                    attrs.input.payloads, [ModelRequest]
                )
                activity.key = script.key_of(request.model_dump())
            activities[event.event_id] = activity
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            activities[started.scheduled_event_id].attempt = started.attempt
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = activities[event.activity_task_completed_event_attributes.scheduled_event_id]
            done.completions += 1
            done.completed_at = event.event_time.ToDatetime(tzinfo=UTC).timestamp()
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            accepted += 1
    return list(activities.values()), accepted


async def check(
    api: httpx.AsyncClient, temporal: Client, fake: FakeAnthropic, emails: list[Received],
    script: Script, workers: Workers, run_ids: dict[int, str], pauses: dict[str, set[str]],
    figures: Figures,
) -> None:
    """Work out the figures and every broken promise, then assert there are none."""
    runs = await asyncio.gather(*(get_run(api, run_ids[run]) for run in range(RUNS)))
    histories = await asyncio.gather(
        *(history_activities(temporal, script, run_ids[run]) for run in range(RUNS))
    )
    requests: dict[Key, list[RecordedRequest]] = defaultdict(list)
    for request in fake.requests:
        key = script.key_of(request.body) if request.body is not None else None
        if key is not None:
            requests[key].append(request)
    for copies in requests.values():
        copies.sort(key=lambda r: r.received_at)
    by_subject: dict[str, list[Received]] = defaultdict(list)
    for mail in emails:
        by_subject[str(mail.message["Subject"])].append(mail)

    figures.completed = sum(run["status"] == "completed" for run in runs)
    figures.model_calls = len(requests)
    figures.model_requests = sum(len(copies) for copies in requests.values())
    figures.resent_in_flight = figures.model_requests - figures.model_calls
    # The fake had written its answer before the kill that cut the call short (the first
    # after it arrived): the worker died between the answer and reporting it to Temporal.
    figures.resent_after_answer = sum(
        before.responded_at is not None
        and before.responded_at < min(k for k in workers.kills if k > before.received_at)
        for copies in requests.values()
        for before in copies[:-1]
        if any(k > before.received_at for k in workers.kills)
    )
    figures.kills_mid_call = sum(
        any(r.received_at < kill and (r.responded_at is None or r.responded_at > kill)
            for copies in requests.values() for r in copies)
        for kill in workers.kills
    )
    figures.model_attempts = sum(a.attempt for acts, _ in histories for a in acts
                                 if a.name == "model_call")
    figures.email_attempts = sum(a.attempt for acts, _ in histories for a in acts
                                 if a.name == "send_email")
    figures.emails = len(emails)
    figures.emails_twice_same_id = sum(
        len(copies) - 1 for copies in by_subject.values()
        if len({c.message["Message-ID"] for c in copies}) == 1
    )

    problems: list[str] = []
    unexpected = sorted(k for k in requests if k not in script.delays)
    if unexpected:
        problems.append(f"model calls no script asked for: {unexpected}")
    pending = {id(reply) for reply in fake.pending()}
    leftover = [reply.text or reply.tool_use_id for reply in script.scripted
                if id(reply) in pending]
    if leftover:
        problems.append(f"scripted answers never asked for: {leftover}")
    if set(figures.approvals) - {202, 409, 503}:
        problems.append(f"approvals answered {dict(figures.approvals)}")
    for run, done in enumerate(runs):
        problems.extend(
            f"run {run} ({run_ids[run]}): {text}"
            for text in run_problems(run, done, histories[run], requests, by_subject, script,
                                     workers, pauses[run_ids[run]], figures)
        )
    if by_subject:
        problems.append(f"emails no run sent: {sorted(by_subject)}")
    figures.wall_seconds = time.monotonic() - figures.began
    print(figures)
    shown = "\n  ".join(problems[:25])
    assert not problems, f"{len(problems)} problems:\n  {shown}\n{figures}"


def run_problems(
    run: int, done: dict[str, Any], history: tuple[list[Activity], int],
    requests: dict[Key, list[RecordedRequest]], by_subject: dict[str, list[Received]],
    script: Script, workers: Workers, pauses: set[str], figures: Figures,
) -> list[str]:
    """What went wrong for one run, in words (nothing when all is well)."""
    problems: list[str] = []
    # Completed, with every answer counted once.
    if done["status"] != "completed":
        return [f"ended {done['status']}: {done['error']}"]
    outputs = [s["output"] for s in done["steps"]]
    if outputs != [script.output(run, role) for role in ROLES]:
        problems.append(f"step outputs {outputs}")
    if (done["tokens_in"], done["tokens_out"]) != RUN_TOKENS:
        problems.append(f"tokens {done['tokens_in']}/{done['tokens_out']}, expected "
                        f"{RUN_TOKENS}: a model answer was counted twice or lost")

    # Each model call scheduled once and completed once; never sent after it completed;
    # every re-send follows a kill that came after the copy before it.
    activities, accepted = history
    models = [a for a in activities if a.name == "model_call"]
    keys = sorted(a.key for a in models if a.key is not None)
    expected = sorted(k for k in script.keys if k[0] == run)
    if keys != expected or len(models) != len(expected):
        problems.append(f"scheduled model calls {keys}, expected {expected}")
    for activity in models:
        if activity.key is None:
            continue
        copies = requests.get(activity.key, [])
        call = f"model call {activity.key[1]}#{activity.key[2]}"
        if activity.completions != 1:
            problems.append(f"{call} completed {activity.completions} times")
        if not copies:
            problems.append(f"{call} completed without reaching the model")
            continue
        if any(c.body != copies[0].body for c in copies):
            problems.append(f"{call}: its copies differ")
        late = [c for c in copies if c.received_wall > activity.completed_at]
        if late:
            figures.completed_resent += len(late)
            problems.append(
                f"{call} completed at {activity.completed_at:.3f} and was sent again at "
                f"{[round(c.received_wall, 3) for c in late]}"
            )
        if len(copies) > activity.attempt:
            problems.append(f"{call}: {len(copies)} requests from {activity.attempt} attempts")
        for before, after in zip(copies, copies[1:], strict=False):
            if not any(before.received_at - RECORD_LAG < kill < after.received_at
                       for kill in workers.kills):
                earlier = [before.received_at - k for k in workers.kills
                           if k < before.received_at]
                problems.append(
                    f"{call} sent again {after.received_at - before.received_at:.2f}s later "
                    f"with no worker kill in between (the last kill before the first copy: "
                    f"{min(earlier, default=float('nan')):.2f}s earlier; the first copy "
                    f"{'was' if before.responded_at is not None else 'was not'} answered)"
                )

    # One pause, answered once.
    if len(pauses) != 1:
        problems.append(f"paused {len(pauses)} times: {sorted(pauses)}")
    if accepted != 1:
        problems.append(f"accepted {accepted} answers")

    # The approved email arrived once, or twice as the same message.
    email = script.email(run)
    mails = by_subject.pop(email["subject"], [])
    sends = [a for a in activities if a.name == "send_email"]
    attempts = sum(a.attempt for a in sends)
    if len(sends) != 1 or not 1 <= len(mails) <= 2 or len(mails) > attempts:
        problems.append(f"{len(mails)} copies of its email from {len(sends)} send_email "
                        f"calls ({attempts} attempts)")
    for mail in mails:
        if mail.recipients != [email["to"]] or mail.body.strip() != email["body"]:
            problems.append(f"email to {mail.recipients}: {mail.body!r}")
        for header in ("Message-ID", "X-LoopLlama-Idempotency-Key"):
            if mail.message[header] != mails[0].message[header]:
                problems.append(f"two copies of its email with different {header}")
    answers = requests.get((run, "mailer", 1), [])
    results = answers[0].tool_results if answers else []
    if len(results) != 1 or results[0].get("is_error") or "Email sent" not in content_text(
        results[0].get("content")
    ):
        problems.append(f"the mailer was told {results}")
    return problems
