"""Types shared by the API, the workflows and the activities.

Pydantic models travel through Temporal with `temporalio.contrib.pydantic`'s data
converter, so the object a workflow publishes is the object the API returns. Fields are
only ever added with defaults, so running histories keep decoding.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_serializer,
    model_validator,
)

from core.contract import HTTP_REQUEST
from core.crew_graph import after_problem
from core.mcp_names import MAX_SERVER_NAME, SERVER_NAME, mcp_server_of, mcp_tool_parts
from core.model_routing import route, unroutable
from core.timefmt import format_timestamp
from core.tool_schema import tool_schema_problem, tools_size_problem

Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, when_used="json")]

# The built-in tool an agent uses to ask the human a question.
ASK_HUMAN_TOOL = "ask_human"
BUILTIN_TOOLS = ("send_email", "http_request")

MAX_AGENTS = 100
# How many agents of one run may work at once (a workflow's `max_parallel`).
DEFAULT_MAX_PARALLEL = 8
MAX_PARALLEL = 64
MAX_WEBHOOKS = 5
MAX_INSTRUCTIONS = 32_000
MAX_RUN_INPUT = 16_000
# The longest output a fork may set by hand for a step.
MAX_EDITED_OUTPUT = 200_000
DEFAULT_MAX_TOKENS = 1024
DEFAULT_MAX_TOOL_ROUNDS = 10

class _Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped, and values are
    never coerced (`true` or `"10"` is not an integer, `"yes"` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Stored(BaseModel):
    """What travels through Temporal or is published in a memo.

    Decoding never re-runs request validation and ignores unknown fields, so tightening
    a rule or adding a field can never make an in-flight run or a stored history fail to
    decode. The rules live on the request models, checked at the API edge.
    """

    model_config = ConfigDict(extra="ignore")


# --- Workflows (crew definitions) -------------------------------------------------


class Agent(_Strict):
    """One member of a crew."""

    role: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=100)
    instructions: str = Field(default="", max_length=MAX_INSTRUCTIONS)
    tools: list[str] = Field(default_factory=list, max_length=64)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=64_000)
    max_tool_rounds: int = Field(default=DEFAULT_MAX_TOOL_ROUNDS, ge=1, le=100)
    # The earlier agents (by role) whose outputs this one needs. None: the agent just
    # before it (a chain, the reference's crew); []: none, it starts from the run input.
    after: list[str] | None = Field(default=None, max_length=MAX_AGENTS,
                                    exclude_if=lambda value: value is None)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        # Whether this deployment has the provider is the API's to check (its settings).
        if route(value) is None:
            raise ValueError(unroutable(value))
        return value

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("tools must not repeat a name")
        return value


class CustomTool(_Strict):
    """A tool the workflow declares: its input is POSTed as JSON to `url`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(min_length=1, max_length=2000)
    input_schema: dict[str, Any]
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in (*BUILTIN_TOOLS, ASK_HUMAN_TOOL):
            raise ValueError(f"{value!r} is a built-in tool name; choose another name")
        return value

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = tool_schema_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


# What a run tells its watchers (GET /v1/runs/{id}/events) and its webhooks.
RunEventType = Literal[
    "run.started", "step.started", "step.completed", "step.failed", "run.waiting_input",
    "run.resumed", "run.completed", "run.failed", "run.cancelled",
]
RUN_EVENT_TYPES: tuple[RunEventType, ...] = (
    "run.started", "step.started", "step.completed", "step.failed", "run.waiting_input",
    "run.resumed", "run.completed", "run.failed", "run.cancelled",
)


class Webhook(_Strict):
    """Where to POST which of a run's events (signed per Standard Webhooks)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    events: list[RunEventType] = Field(min_length=1, max_length=len(RUN_EVENT_TYPES))

    @field_validator("events")
    @classmethod
    def _unique_events(cls, value: list[RunEventType]) -> list[RunEventType]:
        if len(set(value)) != len(value):
            raise ValueError("events must not repeat a type")
        return value


class HumanInTheLoop(_Strict):
    """How a crew's runs may pause for a person."""

    allow_input_requests: bool = False
    approval_required_tools: list[str] = Field(default_factory=list)
    input_timeout_seconds: int | None = Field(default=None, ge=1, le=31_536_000)


# Header names are RFC 9110 tokens; `env:NAME` names an environment variable.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
_ENV_REFERENCE = re.compile(r"^env:[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_MCP_SERVERS = 8


class McpTool(_Strict):
    """One tool an MCP server listed, as a request may repeat it (read-only: the API
    replaces it with what the server lists)."""

    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=10_000)
    input_schema: dict[str, Any] = Field(default_factory=dict)


class McpServer(_Strict):
    """A remote MCP server (Streamable HTTP) whose tools the crew's agents may use.

    `tools` is filled in by the API from the server's own listing when the workflow is
    created or changed; a value sent is replaced.
    """

    name: str = Field(min_length=1, max_length=MAX_SERVER_NAME)
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    tools: list[McpTool] | None = Field(default=None, max_length=128)

    @field_validator("name")
    @classmethod
    def _server_name(cls, value: str) -> str:
        if not SERVER_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a server name: use lowercase letters and digits, "
                "words joined by single '-' or '_' (like 'crm' or 'issue-tracker')")
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name[:100]!r} is not an HTTP token")
            if header_value.startswith("env:") and not _ENV_REFERENCE.match(header_value):
                raise ValueError(
                    f"header {name!r}: 'env:' must be followed by an environment variable "
                    "name (letters, digits and '_')")
            if not header_value or not all(" " <= c <= "~" or c == "\t" for c in header_value):
                raise ValueError(
                    f"header {name!r}: values are printable ASCII on one line; put a "
                    "secret in the worker's environment and send 'env:NAME'")
        return value


class _WithTools(_Strict):
    """A body that may declare custom tools: their schemas are bounded as a whole before
    any one of them is checked."""

    @model_validator(mode="before")
    @classmethod
    def _tools_not_too_large(cls, data: Any) -> Any:
        problem = tools_size_problem(data.get("tools")) if isinstance(data, dict) else None
        if problem is not None:
            raise ValueError(problem)
        return data


class WorkflowSpec(_WithTools):
    """The editable part of a workflow: the body of `POST /v1/workflows`."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    crew: list[Agent] = Field(min_length=1, max_length=MAX_AGENTS)
    human_in_the_loop: HumanInTheLoop = Field(default_factory=HumanInTheLoop)
    tools: list[CustomTool] = Field(default_factory=list, max_length=32)
    webhooks: list[Webhook] = Field(default_factory=list, max_length=MAX_WEBHOOKS)
    max_parallel: int = Field(default=DEFAULT_MAX_PARALLEL, ge=1, le=MAX_PARALLEL)
    mcp_servers: list[McpServer] = Field(default_factory=list, max_length=MAX_MCP_SERVERS)

    @model_validator(mode="after")
    def _consistent(self) -> WorkflowSpec:
        roles = [agent.role for agent in self.crew]
        duplicates = sorted({r for r in roles if roles.count(r) > 1})
        if duplicates:
            raise ValueError(f"crew roles must be unique; repeated: {', '.join(duplicates)}")
        graph_problem = after_problem(self.crew)
        if graph_problem is not None:
            raise ValueError(graph_problem)
        custom = [tool.name for tool in self.tools]
        if len(set(custom)) != len(custom):
            raise ValueError("tools: each custom tool needs its own name")
        servers = {server.name: server for server in self.mcp_servers}
        if len(servers) != len(self.mcp_servers):
            raise ValueError("mcp_servers: each server needs its own name")
        known = (*BUILTIN_TOOLS, *custom)
        for agent in self.crew:
            for tool in agent.tools:
                if tool in known:
                    continue
                problem = mcp_name_problem(tool, servers)
                if problem is None:
                    continue
                if problem:
                    raise ValueError(f"agent {agent.role!r} names {problem}")
                raise ValueError(
                    f"agent {agent.role!r} names unknown tool {tool!r}: available tools "
                    f"are {', '.join(known)} (declare custom tools in the workflow's "
                    f"'tools' and MCP servers in 'mcp_servers'; agents get "
                    f"'{ASK_HUMAN_TOOL}' automatically when "
                    "human_in_the_loop.allow_input_requests is true)"
                )
        available = {tool for agent in self.crew for tool in agent.tools}
        missing = [
            t for t in self.human_in_the_loop.approval_required_tools
            if t not in available and not mcp_tool_offered(t, available)
        ]
        if missing:
            raise ValueError(
                "human_in_the_loop.approval_required_tools names tools no agent has: "
                + ", ".join(missing)
                + ". Add them to an agent's tools or remove them from the list."
            )
        return self


def mcp_name_problem(name: str, servers: dict[str, McpServer]) -> str | None:
    """For an agent's tool `name` of the MCP forms (`mcp__<server>`,
    `mcp__<server>__<tool>`): what is wrong with it ("" when it is not of those forms at
    all), or None when it names a declared server and, once the server's tools are
    known, one of them."""
    parts = mcp_tool_parts(name)
    server_name = parts[0] if parts is not None else mcp_server_of(name)
    if server_name is None:
        return ""
    server = servers.get(server_name)
    if server is None:
        declared = ", ".join(servers) or "none"
        return (f"the MCP server {server_name!r} in {name!r}, which the workflow does not "
                f"declare in 'mcp_servers' (declared: {declared})")
    if parts is None or server.tools is None:
        return None
    listed = [tool.name for tool in server.tools]
    if parts[1] in listed:
        return None
    return (f"the tool {name!r}, which the MCP server {server_name!r} does not list; it "
            f"lists: {', '.join(listed) or 'no tools'} (or name 'mcp__{server_name}' for all "
            "of them)")


def mcp_tool_offered(name: str, offered: set[str]) -> bool:
    """Whether `name` (`mcp__<server>` or `mcp__<server>__<tool>`) is among the tools
    `offered` to agents, counting a whole server as all of its tools."""
    parts = mcp_tool_parts(name)
    server = parts[0] if parts is not None else mcp_server_of(name)
    if server is None:
        return False
    whole = f"mcp__{server}"
    return whole in offered or (parts is None and any(
        (mine := mcp_tool_parts(tool)) is not None and mine[0] == server for tool in offered))


class WorkflowPatch(_WithTools):
    """The body of `PATCH /v1/workflows/{id}`: any subset of the spec's fields."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    crew: list[Agent] | None = Field(default=None, min_length=1, max_length=MAX_AGENTS)
    human_in_the_loop: HumanInTheLoop | None = None
    tools: list[CustomTool] | None = Field(default=None, max_length=32)
    webhooks: list[Webhook] | None = Field(default=None, max_length=MAX_WEBHOOKS)
    max_parallel: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    mcp_servers: list[McpServer] | None = Field(default=None, max_length=MAX_MCP_SERVERS)

    @model_validator(mode="after")
    def _no_nulls(self) -> WorkflowPatch:
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"fields cannot be null: {', '.join(sorted(nulls))}")
        if not self.model_fields_set:
            raise ValueError(
                "send at least one of: name, description, crew, human_in_the_loop, tools, "
                "webhooks, max_parallel, mcp_servers"
            )
        return self

    @model_serializer(mode="wrap")
    def _only_fields_sent(self, handler: Any) -> dict[str, Any]:
        # Unsent fields must stay unsent on their way through Temporal, or they would
        # arrive as explicit nulls.
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}

    def apply_to(self, current: dict[str, Any]) -> WorkflowSpec:
        """The spec `current` (a definition's editable fields) with this patch's fields
        replaced, validated as a whole by today's rules."""
        return WorkflowSpec.model_validate({**current, **self.model_dump()})


WorkflowStatus = Literal["active", "paused"]


class AgentConfig(_Stored):
    """An agent as stored and as runs receive it (validated as `Agent` on the way in)."""

    role: str
    model: str
    instructions: str = ""
    tools: list[str] = Field(default_factory=list)
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS
    # Shown only when set: a chain's agents keep the shape they always had.
    after: list[str] | None = Field(default=None, exclude_if=lambda value: value is None)


class CustomToolConfig(_Stored):
    """A custom tool as stored (validated as `CustomTool` on the way in)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    url: str


class McpToolConfig(_Stored):
    """One tool an MCP server listed, as the definition keeps it (`name` is the server's
    own name for it; agents know it as `mcp__<server>__<name>`)."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


class McpServerConfig(_Stored):
    """An MCP server as stored, with the tools it listed when the workflow was created
    or changed (validated as `McpServer` on the way in)."""

    name: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    tools: list[McpToolConfig] = Field(default_factory=list)


class HumanInTheLoopConfig(_Stored):
    """Pause settings as stored (validated as `HumanInTheLoop` on the way in)."""

    allow_input_requests: bool = False
    approval_required_tools: list[str] = Field(default_factory=list)
    input_timeout_seconds: int | None = None


class WebhookConfig(_Stored):
    """A webhook as stored (validated as `Webhook` on the way in)."""

    url: str
    events: list[str] = Field(default_factory=list)


class Workflow(_Stored):
    """The workflow object the API returns, as its definition entity stores it."""

    id: str
    name: str
    description: str = ""
    status: WorkflowStatus = "active"
    crew: list[AgentConfig]
    human_in_the_loop: HumanInTheLoopConfig = Field(default_factory=HumanInTheLoopConfig)
    tools: list[CustomToolConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    max_parallel: int = DEFAULT_MAX_PARALLEL
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    created_at: Timestamp
    updated_at: Timestamp

    def spec_fields(self) -> dict[str, Any]:
        """The editable fields, as a request would send them."""
        return self.model_dump(include=set(WorkflowSpec.model_fields))


class DefinitionChange(_Stored):
    """A PATCH as the definition entity receives it: only the fields that were sent."""

    name: str | None = None
    description: str | None = None
    crew: list[AgentConfig] | None = None
    human_in_the_loop: HumanInTheLoopConfig | None = None
    tools: list[CustomToolConfig] | None = None
    webhooks: list[WebhookConfig] | None = None
    max_parallel: int | None = None
    mcp_servers: list[McpServerConfig] | None = None

    @model_serializer(mode="wrap")
    def _only_fields_sent(self, handler: Any) -> dict[str, Any]:
        # Unsent fields must stay unsent on their way through Temporal, or they would
        # arrive as explicit nulls.
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}


# --- Runs -------------------------------------------------------------------------

# `cancelled` extends the reference's statuses (POST /v1/runs/{id}/cancel, or a cancel
# from the Temporal UI); every other status is the reference's own.
RunStatus = Literal["queued", "running", "waiting_input", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: tuple[RunStatus, ...] = ("completed", "failed", "cancelled")


class Pending(BaseModel):
    """What a paused run waits for. `tool` and `tool_input` appear for approvals only."""

    kind: Literal["input", "approval"]
    prompt: str
    tool: str | None = Field(default=None, exclude_if=lambda value: value is None)
    tool_input: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None)
    # Stable for one pause, new for the next (an extension: `respond` may name it as
    # `pause_id`, so a late or repeated answer cannot land on a later pause). None only
    # in memos written before pause ids existed.
    id: str | None = Field(default=None, exclude_if=lambda value: value is None)
    # The step (and its agent's role) that paused: several branches of a crew can wait
    # at once. None only in memos written before crew graphs.
    step_id: str | None = Field(default=None, exclude_if=lambda value: value is None)
    role: str | None = Field(default=None, exclude_if=lambda value: value is None)

    def as_pending(self) -> Pending:
        """This pause as the run's `pending`: the reference's shape (and its `id`)."""
        return self.model_copy(update={"step_id": None, "role": None})


USAGE_FIELDS = ("tokens_in", "tokens_out", "tokens_in_cached", "tokens_in_cache_write")


class Usage(BaseModel):
    """Tokens of one model call, or of several added up."""

    # Every input token the model read: uncached + written to the cache + read from it.
    tokens_in: int = 0
    tokens_out: int = 0
    # The parts of tokens_in read from / written to the prompt cache.
    tokens_in_cached: int = 0
    tokens_in_cache_write: int = 0

    @classmethod
    def of(cls, counter: BaseModel) -> Usage:
        """The tokens a step or a run has counted."""
        return cls(**{name: getattr(counter, name) for name in USAGE_FIELDS})

    def add_to(self, *counters: BaseModel) -> None:
        """Add these tokens to each counter (a step, a run, another `Usage`)."""
        for counter in counters:
            for name in USAGE_FIELDS:
                setattr(counter, name, getattr(counter, name) + getattr(self, name))


class Step(BaseModel):
    """One agent's turn in a run."""

    id: str
    order: int
    role: str
    model: str
    input: str
    output: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_in_cached: int = 0
    tokens_in_cache_write: int = 0
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    # Forks only (POST /v1/runs/{id}/fork), shown only when set: the source step this
    # one was copied from (its output, tokens and times), an output replaced by hand,
    # and tool calls a replayed step made that the source run has no result for.
    reused_from: str | None = Field(default=None, exclude_if=lambda value: value is None)
    edited: bool = Field(default=False, exclude_if=lambda value: not value)
    replay_misses: int | None = Field(default=None, exclude_if=lambda value: value is None)


class ForkOrigin(BaseModel):
    """Where a fork comes from: the source run and the step it started again from (None
    when the source had not reached it), and that run's own origin if it was a fork."""

    run_id: str
    step_id: str | None = None
    forked_from: ForkOrigin | None = Field(default=None,
                                           exclude_if=lambda value: value is None)


class RunSummary(BaseModel):
    """The run object without `steps`: list items and the trigger, cancel and retry
    answers."""

    id: str
    workflow_id: str
    status: RunStatus = "queued"
    input: str
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
    # An extension: every open pause, oldest first, each with the step and role that
    # paused (`pending` is the first of them, in the reference's shape).
    pauses: list[Pending] = Field(default_factory=list)
    # A fork's origin (an extension; absent on every other run).
    forked_from: ForkOrigin | None = Field(default=None,
                                           exclude_if=lambda value: value is None)


class Run(RunSummary):
    """The run object of the reference, steps included."""

    steps: list[Step] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON shape of list items and the trigger response: no `steps`."""
        return self.model_dump(mode="json", exclude={"steps"})

    def detail(self) -> dict[str, Any]:
        """The JSON shape of `GET /v1/runs/{id}`: every field, `steps` last."""
        return self.model_dump(mode="json")


class TriggerRequest(_Strict):
    """The body of `POST /v1/workflows/{id}/runs`."""

    input: str = Field(min_length=1, max_length=MAX_RUN_INPUT)


class AgentChange(_Strict):
    """What a fork changes about one agent: any of these fields."""

    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    model: str | None = Field(default=None, min_length=1, max_length=100)
    max_tokens: int | None = Field(default=None, ge=1, le=64_000)
    tools: list[str] | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _something(self) -> AgentChange:
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"fields cannot be null: {', '.join(sorted(nulls))}")
        if not self.model_fields_set:
            raise ValueError("send at least one of: instructions, model, max_tokens, tools")
        if self.model is not None and route(self.model) is None:
            raise ValueError(unroutable(self.model))
        return self


class ForkRequest(_Strict):
    """The body of `POST /v1/runs/{id}/fork`."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    start_from: str = Field(alias="from", min_length=1, max_length=64)
    agents: dict[str, AgentChange] = Field(default_factory=dict, max_length=MAX_AGENTS)
    outputs: dict[str, Annotated[str, Field(max_length=MAX_EDITED_OUTPUT)]] = Field(
        default_factory=dict, max_length=MAX_AGENTS)
    input: str | None = Field(default=None, min_length=1, max_length=MAX_RUN_INPUT)
    tools: Literal["live", "replay"] = "live"

    @model_validator(mode="after")
    def _not_from_an_edited_step(self) -> ForkRequest:
        if self.start_from in self.outputs:
            raise ValueError(
                f"from: {self.start_from!r} is also in 'outputs', so it would not run; start "
                "from a step after it, or leave its output as it was")
        return self


class RecordedToolCall(_Stored):
    """One tool call of a source run and what answered it (a fork's replay record)."""

    name: str
    input: Any = None
    content: str = ""
    is_error: bool = False


class ForkPlan(_Stored):
    """What a fork's run workflow needs to know beyond a run's usual input."""

    forked_from: ForkOrigin
    tools: Literal["live", "replay"] = "live"
    # For each step that runs again in replay mode, its source step's tool calls.
    replay: dict[str, list[RecordedToolCall]] = Field(default_factory=dict)


class RespondRequest(_Strict):
    """The body of `POST /v1/runs/{id}/respond`."""

    action: Literal["input", "approve", "reject"]
    input: str | None = Field(default=None, max_length=MAX_RUN_INPUT)
    reason: str | None = Field(default=None, max_length=4000)
    # An extension: the `pending.id` this answers. A mismatch is refused (409), so a
    # retried or late answer never lands on a later pause. Unset: the current pause.
    pause_id: str | None = Field(default=None, min_length=1, max_length=64)


class Answer(_Stored):
    """A respond as the run receives it (validated as `RespondRequest` on the way in)."""

    action: str
    input: str | None = None
    reason: str | None = None
    pause_id: str | None = None


def answered_pause(pauses: list[Pending], answer: Answer) -> Pending | None:
    """The open pause `answer` is for: the one its `pause_id` names, else the oldest.

    None when that pause is not open (answered already, or never was).
    """
    if answer.pause_id is None:
        return pauses[0] if pauses else None
    return next((pause for pause in pauses if pause.id == answer.pause_id), None)


def stale_answer(pauses: list[Pending], answer: Answer) -> str:
    """What to say (a 409) when the pause `answer` names is not open."""
    if not pauses:
        return (
            f"That pause was already answered: pause_id {answer.pause_id!r} is closed and "
            "the run has no other open pause. GET the run to see its state."
        )
    open_ids = ", ".join(repr(pause.id) for pause in pauses)
    return (
        f"That pause was already answered: pause_id {answer.pause_id!r} is not one of the "
        f"run's open pauses ({open_ids}). GET the run to see what it waits for now."
    )


def respond_problem(pending: Pending, answer: Answer) -> str | None:
    """Why `answer` does not fit what the run waits for (a 400), or None."""
    if pending.kind == "input" and answer.action != "input":
        return (
            f"The run is waiting for an answer to a question; send action \"input\" with "
            f"the answer in \"input\", not {answer.action!r}."
        )
    if pending.kind == "approval" and answer.action == "input":
        return (
            f"The run is waiting for approval of {pending.tool}; send action \"approve\" "
            "or \"reject\" (with an optional \"reason\")."
        )
    if answer.action == "input" and not (answer.input or "").strip():
        return 'Action "input" needs a non-empty "input" with the answer.'
    return None


class RunInput(_Stored):
    """Everything a run workflow needs, fixed at trigger time."""

    run_id: str
    workflow_id: str
    input: str
    created_at: Timestamp
    crew: list[AgentConfig]
    human_in_the_loop: HumanInTheLoopConfig = Field(default_factory=HumanInTheLoopConfig)
    tools: list[CustomToolConfig] = Field(default_factory=list)
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    # Which generation of the definition's webhook secret signs this run's deliveries
    # when the definition is gone by then (otherwise its current one does).
    webhook_secret_version: int = 0
    # The task queue of each rate-limited model's calls (core/settings.py).
    model_task_queues: dict[str, str] = Field(default_factory=dict)
    max_parallel: int = DEFAULT_MAX_PARALLEL
    # Set when this execution retries a failed one: what that one finished (for a fork:
    # the steps it reuses or that were edited).
    carried: CarriedRun | None = None
    # Set on a fork: where it comes from and how its tools act.
    fork: ForkPlan | None = None


class StepProgress(_Stored):
    """How far an unfinished step's tool loop got: what a retry goes on from.

    `messages` holds whole rounds after the step input (model answer, tool results);
    `response` and `results` the round that was under way, when its model call had
    answered and some of its tools (by position) had run.
    """

    order: int
    rounds: int = 0
    messages: list[dict[str, Any]] = Field(default_factory=list)
    response: ModelResponse | None = None
    results: dict[int, ToolResult] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


class CarriedRun(_Stored):
    """What a retried run keeps from the failed execution it goes on from."""

    # The Temporal run id of that execution (the run's event stream follows it back).
    retry_of: str | None = None
    # When the run first started; a retry goes on with it.
    started_at: Timestamp | None = None
    # Every step that completed, as it was published.
    steps: list[Step] = Field(default_factory=list)
    # The unfinished steps' tool loops, so no completed model call is paid for twice.
    progress: list[StepProgress] = Field(default_factory=list)
    # A retry's totals go on counting the tokens its steps spent; a fork's count only
    # what the fork itself consumes.
    counts_tokens: bool = True

    def apply_to(self, run: Run) -> None:
        """`run` as a retry (or a fork) starts it: every completed step kept."""
        run.started_at = self.started_at
        for step in self.steps:
            if step.output is not None and step.error is None:
                run.steps.append(step.model_copy())
                if self.counts_tokens:
                    Usage.of(step).add_to(run)
        run.total_steps = len(run.steps)


class WebhookDelivery(_Stored):
    """One event for one webhook, as its delivery workflow and activity receive it."""

    message_id: str
    url: str
    workflow_id: str
    secret_version: int = 0
    type: str
    timestamp: Timestamp
    data: dict[str, Any]


class RespondAccepted(BaseModel):
    """What `respond` returns once the run has taken the answer."""

    id: str
    status: RunStatus


# --- Tools ------------------------------------------------------------------------


class McpTarget(_Stored):
    """Where an MCP tool call goes: the server as declared and the tool's own name there.

    Header values of the form `env:NAME` are read from the worker's environment when the
    call is made, so no secret is stored in Temporal.
    """

    server: str
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    tool: str


class ToolCall(_Stored):
    """One tool call an agent made, as a tool activity receives it."""

    run_id: str
    tool_use_id: str
    name: str
    input: dict[str, Any]
    custom: CustomToolConfig | None = None
    mcp: McpTarget | None = None
    # Where the call stands in the run: its step (0-based), the step's tool round and
    # the call's place among that round's calls. None in calls scheduled before these
    # fields existed.
    step: int | None = None
    round: int | None = None
    position: int | None = None

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt of this call, different for every other call.

        Built from the call's place in the run, never from the model's `tool_use` id
        alone: models and gateways may repeat those ids.
        """
        if self.step is None or self.round is None or self.position is None:
            return f"{self.run_id}:{self.tool_use_id}"
        return f"{self.run_id}:{self.step}:{self.round}:{self.position}"

    @property
    def sends_http(self) -> bool:
        """`http_request` or a custom tool: a request whose destination the worker's
        allow-list and address rules decide (activities/tool_checks.py)."""
        return self.name == HTTP_REQUEST or self.custom is not None


class ToolResult(BaseModel):
    """What goes back to the model as the tool_result."""

    content: str
    is_error: bool = False


class ToolCheck(_Stored):
    """What the tool would answer without acting, if it would refuse the call; None when
    it would go ahead."""

    refusal: ToolResult | None = None


# --- Model calls ------------------------------------------------------------------


class ModelRequest(BaseModel):
    """One Messages API call, provider-neutral."""

    model: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    max_tokens: int = DEFAULT_MAX_TOKENS


class ModelResponse(BaseModel):
    """What a model call returns to the agent loop (its token fields as in `Usage`)."""

    content: list[dict[str, Any]]
    stop_reason: str | None = None
    # Every input token the model read: uncached + written to the cache + read from it.
    tokens_in: int = 0
    tokens_out: int = 0
    # The parts of tokens_in read from / written to the prompt cache.
    tokens_in_cached: int = 0
    tokens_in_cache_write: int = 0

    def text(self) -> str:
        """The concatenated text blocks."""
        return "".join(b.get("text", "") for b in self.content if b.get("type") == "text")

    def tool_uses(self) -> list[dict[str, Any]]:
        """The tool_use blocks, in order."""
        return [b for b in self.content if b.get("type") == "tool_use"]

    def usage(self) -> Usage:
        """The call's tokens."""
        return Usage.of(self)
