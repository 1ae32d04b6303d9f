"""Typed objects the SDK returns and accepts.

Response models ignore fields they do not know (``extra="ignore"``), and statuses and
kinds are plain strings rather than closed enums, so a newer server that adds a field or
a status does not break an older SDK. Timestamps (``2026-05-20T17:10:00.000Z``) become
timezone-aware `datetime` objects in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "Webhook",
    "Agent",
    "CustomTool",
    "Decision",
    "EVENT_TYPES",
    "ForkOrigin",
    "HumanInTheLoop",
    "McpServer",
    "McpTool",
    "RunEvent",
    "TERMINAL_EVENT_TYPES",
    "Pending",
    "RespondResult",
    "Run",
    "Step",
    "Workflow",
    "WorkflowDeleted",
    "approve",
    "reject",
]

#: Every run status the API documents, in lifecycle order.
RUN_STATUSES = ("queued", "running", "waiting_input", "completed", "failed", "cancelled")
#: Statuses after which a run never changes again (until a retry of a failed one).
TERMINAL_STATUSES = ("completed", "failed", "cancelled")


def _api_timestamp(value: datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo else value
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# Dumped to JSON exactly as the API sends it: milliseconds, `Z`.
Timestamp = Annotated[datetime, PlainSerializer(_api_timestamp, when_used="json")]


class _Model(BaseModel):
    """Tolerant of unknown fields, so newer servers don't break older SDKs."""

    model_config = ConfigDict(extra="ignore")


# --- Workflows --------------------------------------------------------------------


class Agent(_Model):
    """One member of a crew.

    Build one to pass to `workflows.create(crew=[...])`; only the fields you set are
    sent, so the server's defaults apply to the rest.

    `model` picks the provider as well as the model: ``claude-...`` or
    ``anthropic/<model>`` (Anthropic), ``openai/<model>``, ``<provider>/<model>`` for an
    OpenAI-compatible endpoint the server names in ``LOOPLLAMA_PROVIDERS`` (like
    ``local/llama3.2``), or ``loopllama-offline``. The server judges the name; the SDK
    sends it as it is.

    `tools` names built-in tools, the workflow's custom tools, and MCP tools:
    ``mcp__<server>__<tool>`` for one tool of a server in the workflow's `mcp_servers`,
    ``mcp__<server>`` for all of its tools.

    `after` names the roles of earlier agents this one needs (their outputs are its
    input). None (or unset): the agent just before it in the crew, so a plain list is a
    chain; ``[]``: it starts at once, from the run's input. Agents whose needs are met
    work in parallel, up to the workflow's `max_parallel`.
    """

    role: str
    model: str
    instructions: str = ""
    tools: list[str] = Field(default_factory=list)
    max_tokens: int = 1024
    max_tool_rounds: int = 10
    after: list[str] | None = None


class HumanInTheLoop(_Model):
    """How a crew's runs may pause for a person.

    `allow_input_requests` lets agents ask the human a question; tools named in
    `approval_required_tools` (MCP tools too, named as agents name them:
    ``mcp__<server>__<tool>``, or ``mcp__<server>`` for all of a server's tools) wait
    for a human's go-ahead before they run;
    `input_timeout_seconds` is how long a run waits for a human before it fails
    (None: forever).
    """

    allow_input_requests: bool = False
    approval_required_tools: list[str] = Field(default_factory=list)
    input_timeout_seconds: int | None = None


class CustomTool(_Model):
    """A tool the workflow declares: agents that list `name` may call it, and its input
    (checked against `input_schema`, a JSON schema) is POSTed as JSON to `url`."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    url: str


class Webhook(_Model):
    """Where the API POSTs which of a run's events (signed; see `verify_webhook`)."""

    url: str
    events: list[str] = Field(default_factory=list)


class McpTool(_Model):
    """One tool an MCP server listed: `name` is the server's own name for it; agents
    name it ``mcp__<server>__<name>``."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


class McpServer(_Model):
    """A remote MCP server (Streamable HTTP) whose tools the crew's agents may use.

    `name` (lowercase letters and digits, words joined by ``-`` or ``_``, like
    ``"crm"``) is how agents name its tools: ``mcp__<name>__<tool>``, or
    ``mcp__<name>`` for all of them. `headers` go with every request to `url`; a value
    ``"env:NAME"`` is read from the environment of LoopLlama's worker when a tool is
    called (and of its API when it lists the tools), so secrets stay out of the
    workflow.

    `tools` is read-only: the API fills it in from the server's own listing each time
    the workflow is created or its `mcp_servers` are changed. The `mcp_servers=` of
    `workflows.create()`/`update()` never sends it.
    """

    name: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    tools: list[McpTool] = Field(default_factory=list)


class Workflow(_Model):
    """A named crew plus its human-in-the-loop settings, custom tools and MCP servers.

    `status` is ``"active"`` or ``"paused"`` (a paused workflow refuses new runs).
    `max_parallel` (1-64) is how many agents of one run may work at once.
    `mcp_servers` (at most 8) come with the tools each listed (see `McpServer`).
    """

    id: str
    name: str
    description: str = ""
    status: str = "active"
    crew: list[Agent] = Field(default_factory=list)
    human_in_the_loop: HumanInTheLoop = Field(default_factory=HumanInTheLoop)
    tools: list[CustomTool] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    max_parallel: int = 8
    mcp_servers: list[McpServer] = Field(default_factory=list)
    created_at: Timestamp
    updated_at: Timestamp

    @property
    def is_paused(self) -> bool:
        """Whether the workflow refuses new runs until resumed."""
        return self.status == "paused"


class WorkflowDeleted(_Model):
    """The answer to `workflows.delete()`; the workflow's runs stay readable."""

    id: str
    deleted: bool


# --- Runs -------------------------------------------------------------------------


class Pending(_Model):
    """What a paused run waits for.

    `kind` is ``"input"`` (answer `prompt`, a question) or ``"approval"`` (approve or
    reject running `tool` with `tool_input`; `prompt` summarises the action). `id` names
    this pause; `runs.respond()` sends it, so an answer never lands on a later pause.
    `step_id` and `role` say which step and agent paused (None from older servers).
    """

    kind: str
    prompt: str = ""
    tool: str | None = None
    tool_input: dict[str, Any] | None = None
    id: str | None = None
    step_id: str | None = None
    role: str | None = None


class Step(_Model):
    """One agent's turn in a run.

    Steps of a fork (`runs.fork()`) say how they came to be: `reused_from` names the
    source run's step this one was copied from (output, tokens and times; a fork's run
    totals do not count those tokens), `edited` is True when the fork set the output by
    hand, and `replay_misses` counts the tool calls a step replayed (``tools="replay"``)
    made that the source run has no recorded result for. All three are unset on every
    other step, and from older servers.
    """

    id: str
    order: int
    role: str
    model: str = ""
    input: str = ""
    output: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_in_cached: int = 0
    tokens_in_cache_write: int = 0
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    reused_from: str | None = None
    edited: bool = False
    replay_misses: int | None = None

    @property
    def is_reused(self) -> bool:
        """Copied from a source run's step by a fork, not run again."""
        return self.reused_from is not None


class ForkOrigin(_Model):
    """Where a fork comes from: `run_id` is the source run, `step_id` the source's step
    the fork started again from (None when the source had not reached it), and
    `forked_from` that run's own origin when it was a fork too."""

    run_id: str
    step_id: str | None = None
    forked_from: ForkOrigin | None = None

    @property
    def chain(self) -> list[str]:
        """The run ids this fork descends from, nearest first."""
        ids: list[str] = []
        origin: ForkOrigin | None = self
        while origin is not None:
            ids.append(origin.run_id)
            origin = origin.forked_from
        return ids


class Run(_Model):
    """One execution of a workflow against one input.

    `status` is one of `RUN_STATUSES`. `steps` is filled only by `runs.get()` (and so by
    `runs.poll()`); list and trigger answers leave it empty. Steps are listed in the
    order they started; in a crew graph several may be running at once.

    `pauses` lists every open pause, oldest first (parallel agents can each be paused);
    `pending` is the oldest of them, or None. The run is ``waiting_input`` while any is
    open. `open_pauses` gives the list from older servers too (which send only
    `pending`).

    `forked_from` is set on a fork (`runs.fork()`): the run and step it started again
    from. A fork's token totals count only what the fork itself consumed.
    """

    id: str
    workflow_id: str
    status: str
    input: str = ""
    output: str | None = None
    error: str | None = None
    total_steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_in_cached: int = 0
    tokens_in_cache_write: int = 0
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    created_at: Timestamp
    pending: Pending | None = None
    pauses: list[Pending] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    forked_from: ForkOrigin | None = None

    @field_validator("pauses", mode="before")
    @classmethod
    def _no_pauses(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def open_pauses(self) -> list[Pending]:
        """Every open pause, oldest first: `pauses`, or `[pending]` from a server that
        sends only `pending`."""
        if self.pauses:
            return list(self.pauses)
        return [self.pending] if self.pending is not None else []

    @property
    def is_terminal(self) -> bool:
        """Completed, failed or cancelled: the run will not change again (unless a failed
        one is retried)."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_fork(self) -> bool:
        """Started by `runs.fork()` from another run (`forked_from` says which)."""
        return self.forked_from is not None

    @property
    def is_waiting(self) -> bool:
        """Paused for a human (`pauses` say for what); answer with `runs.respond()`."""
        return self.status == "waiting_input"


class RespondResult(_Model):
    """The 202 answer to `runs.respond()`: the run's id and its status after resuming
    (still ``"waiting_input"`` while other pauses are open)."""

    id: str
    status: str


# --- Events -----------------------------------------------------------------------

#: Every event type a run's stream (and its webhooks) can tell.
EVENT_TYPES = (
    "run.started", "step.started", "step.completed", "step.failed", "run.waiting_input",
    "run.resumed", "run.completed", "run.failed", "run.cancelled",
)
#: The events after which a run's stream ends (a retry of a failed run starts it again).
TERMINAL_EVENT_TYPES = ("run.completed", "run.failed", "run.cancelled")


class RunEvent(_Model):
    """One event of a run's stream: `id` counts 1, 2, 3, ... per run.

    `data` is the run without steps (run events, with `pending`) or the step (step
    events); `run` and `step` give it typed.
    """

    id: int
    type: str
    run_id: str
    created_at: Timestamp
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def run(self) -> Run | None:
        """The run, for run events."""
        return Run.model_validate(self.data) if self.type.startswith("run.") else None

    @property
    def step(self) -> Step | None:
        """The step, for step events."""
        return Step.model_validate(self.data) if self.type.startswith("step.") else None

    @property
    def is_terminal(self) -> bool:
        """Whether the run ended with this event."""
        return self.type in TERMINAL_EVENT_TYPES


# --- Human-in-the-loop decisions ----------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A reply to a paused run, as returned by an `on_waiting_input` callback.

    Use `approve()` and `reject()` to make one; a callback answers a question by
    returning the answer text itself.
    """

    action: Literal["input", "approve", "reject"]
    input: str | None = None
    reason: str | None = None


def approve() -> Decision:
    """Approve the pending action (for a pause of kind ``"approval"``)."""
    return Decision(action="approve")


def reject(reason: str | None = None) -> Decision:
    """Decline the pending action; `reason` is passed back to the agent."""
    return Decision(action="reject", reason=reason)
