"""The work of one step: an agent's tool loop, every model and tool call an activity,
and its pauses for a person.

The loop records how far it got (`StepProgress`): whole rounds, and within the round
under way the model's answer and each tool result. A run that fails publishes that for
its unfinished steps, and a retry goes on from it, so a model call that completed is
never paid for twice and a tool that ran (an approved email) does not run again.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from core.mcp_names import mcp_tool_parts
    from core.tools import approval_summary, input_problem, needs_approval, tool_definitions
    from core.types import (
        ASK_HUMAN_TOOL,
        AgentConfig,
        McpTarget,
        ModelRequest,
        ModelResponse,
        Pending,
        RecordedToolCall,
        Run,
        RunInput,
        Step,
        StepProgress,
        ToolCall,
        ToolResult,
    )
    from workflows.activity_calls import TOOL_CHECKS, model_call, tool_call
    from workflows.failures import StepFailed, describe_activity_failure
    from workflows.pauses import HumanGate
    from workflows.run_publisher import RunPublisher

# Temporal refuses a history past 50K events or 50 MB; a run stops short of that with a
# clear failure instead. Large texts live outside the history (core/blob_store.py), so
# these are reached only by very long tool loops.
HISTORY_EVENT_BUDGET = 40_000
HISTORY_BYTES_BUDGET = 40 * 1024 * 1024
# Runs that reach a tool call from this version on check the built-in tools' own rules.
BUILTIN_TOOL_RULES = "builtin-tool-rules"
# Set in runs that ask the worker whether a tool would refuse a call before they ask a
# person to approve it.
TOOL_CHECK_FIRST = "tool-check-first"


class AgentStep:
    """Runs one agent's step to its output; raises `StepFailed` when it cannot."""

    def __init__(self, start: RunInput, agent: AgentConfig, step: Step, run: Run,
                 progress: StepProgress, publisher: RunPublisher, gate: HumanGate) -> None:
        self._start = start
        self._agent = agent
        self._step = step
        self._run = run
        self._progress = progress
        self._publisher = publisher
        self._gate = gate
        # A fork in replay mode: the source step's tool calls, answered from the record.
        fork = start.fork
        self._replay: list[RecordedToolCall | None] | None = (
            list(fork.replay.get(agent.role, [])) if fork is not None and fork.tools == "replay"
            else None)

    async def run(self) -> str:
        """The agent's final text, after as many tool rounds as it needs."""
        agent, progress = self._agent, self._progress
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": self._step.input}, *progress.messages]
        tools = tool_definitions(
            agent, self._start.tools, self._start.human_in_the_loop.allow_input_requests,
            self._start.mcp_servers,
        )
        schemas = {tool["name"]: tool["input_schema"] for tool in tools}
        for rounds in range(progress.rounds, agent.max_tool_rounds + 1):
            response = progress.response or await self._call_model(messages, tools)
            progress.response = response
            uses = response.tool_uses()
            if response.stop_reason != "tool_use" or not uses:
                return response.text()
            if rounds == agent.max_tool_rounds:
                break
            answer = {"role": "assistant", "content": response.content}
            messages.append(answer)
            results = []
            for position, use in enumerate(uses):
                result = progress.results.get(position)
                if result is None:
                    result = await self._use_tool(use, schemas, (self._step.order, rounds,
                                                                 position))
                    progress.results[position] = result
                results.append(
                    {"type": "tool_result", "tool_use_id": use["id"],
                     "content": result.content, "is_error": result.is_error}
                )
            returned = {"role": "user", "content": results}
            messages.append(returned)
            progress.messages += [answer, returned]
            progress.response, progress.results, progress.rounds = None, {}, rounds + 1
        raise StepFailed(
            f"the agent asked for more than {agent.max_tool_rounds} rounds of tool calls "
            "(max_tool_rounds); raise the limit or simplify the task",
            restart=True,
        )

    async def _use_tool(
        self, use: dict[str, Any], schemas: dict[str, dict[str, Any]],
        place: tuple[int, int, int],
    ) -> ToolResult:
        """Run one tool call; `place` is (step, round, position) for its idempotency key."""
        name, tool_input = str(use.get("name")), use.get("input")
        if self._replay is not None:
            return self._replayed(name, tool_input)
        if name not in schemas:
            return ToolResult(content=f"There is no tool named {name!r}.", is_error=True)
        # The built-in tools' own rules (one address, no control characters) refuse
        # more than runs recorded before them checked; those replay without them.
        problem = input_problem(schemas[name], tool_input,
                                builtin_rules=workflow.patched(BUILTIN_TOOL_RULES))
        if problem is not None or not isinstance(tool_input, dict):
            return ToolResult(
                content=f"Invalid input for {name}: {problem}. Nothing was run; correct the "
                "input and call the tool again.",
                is_error=True,
            )
        if name == ASK_HUMAN_TOOL:
            answer = await self._gate.ask(
                self._step, Pending(kind="input", prompt=str(tool_input["question"]))
            )
            return ToolResult(content=answer.input or "")
        call = self._tool_call(name, str(use["id"]), tool_input, place)
        if needs_approval(name, self._start.human_in_the_loop.approval_required_tools):
            refused = await self._refusal(call)
            if refused is not None:
                return refused
            decision = await self._gate.ask(
                self._step,
                Pending(kind="approval", prompt=approval_summary(name, tool_input), tool=name,
                        tool_input=tool_input),
            )
            if decision.action == "reject":
                reason = (decision.reason or "").strip() or "no reason given"
                return ToolResult(
                    content=f"The user declined this {name} call, so it was not run. "
                    f"Reason: {reason}",
                    is_error=True,
                )
        return await self._run_tool(call)

    def _replayed(self, name: str, tool_input: Any) -> ToolResult:
        """The source run's result for the first unused call of `name` with this input;
        a miss is a tool error, counted on the step. Nothing acts on the world."""
        assert self._replay is not None
        for index, record in enumerate(self._replay):
            if record is not None and record.name == name and record.input == tool_input:
                self._replay[index] = None
                return ToolResult(content=record.content, is_error=record.is_error)
        self._step.replay_misses = (self._step.replay_misses or 0) + 1
        return ToolResult(
            content=f"Replay: the source run has no recorded result for {name} with this "
            "input, so nothing was run. This is a replay of a recorded run: its tools "
            "answer only the calls the recorded run made.",
            is_error=True,
        )

    def _tool_call(self, name: str, tool_use_id: str, tool_input: dict[str, Any],
                   place: tuple[int, int, int]) -> ToolCall:
        custom = next((t for t in self._start.tools if t.name == name), None)
        step, round_, position = place
        return ToolCall(run_id=self._run.id, tool_use_id=tool_use_id, name=name,
                        input=tool_input, custom=custom, mcp=self._mcp_target(name),
                        step=step, round=round_, position=position)

    async def _refusal(self, call: ToolCall) -> ToolResult | None:
        """What an HTTP tool would answer without sending (the allow-list, the addresses
        its host resolves to), asked before a person is asked to approve; None when it
        would send. Runs recorded before this check ask nobody."""
        if not call.sends_http or not workflow.patched(TOOL_CHECK_FIRST):
            return None
        check_history_budget()
        self._publisher.flush()
        try:
            checked = await TOOL_CHECKS.execute(
                call, summary=f"{self._agent.role} · check {call.name}")
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            # Nothing to tell: the tool checks again when it runs.
            return None
        return checked.refusal

    async def _run_tool(self, call: ToolCall) -> ToolResult:
        name = call.name
        check_history_budget()
        self._publisher.flush()
        try:
            return await tool_call(name).execute(call, summary=f"{self._agent.role} · {name}")
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            return ToolResult(
                content=f"The {name} tool failed: {describe_activity_failure(err, 'tool')}.",
                is_error=True,
            )

    def _mcp_target(self, name: str) -> McpTarget | None:
        parts = mcp_tool_parts(name)
        if parts is None:
            return None
        # Only offered tools get here, and only the run's servers' tools are offered.
        server = next((s for s in self._start.mcp_servers if s.name == parts[0]), None)
        if server is None:
            return None
        return McpTarget(server=server.name, url=server.url, headers=server.headers,
                         tool=parts[1])

    async def _call_model(self, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]]) -> ModelResponse:
        agent = self._agent
        request = ModelRequest(
            model=agent.model,
            system=agent.instructions,
            messages=list(messages),
            tools=tools,
            max_tokens=agent.max_tokens,
        )
        check_history_budget()
        self._publisher.flush()
        try:
            response = await model_call(agent.model).execute(
                request,
                summary=f"{agent.role} · {agent.model}",
                # A rate-limited model's calls wait their turn on its own task queue.
                task_queue=self._start.model_task_queues.get(agent.model),
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            raise StepFailed(describe_activity_failure(err, "model")) from None
        response.usage().add_to(self._step, self._run, self._progress.usage)
        self._publisher.publish(self._step)
        return response


def check_history_budget() -> None:
    """Fail the step before the run's history reaches Temporal's limits."""
    info = workflow.info()
    events, size = info.get_current_history_length(), info.get_current_history_size()
    if events > HISTORY_EVENT_BUDGET or size > HISTORY_BYTES_BUDGET:
        raise StepFailed(
            f"the run's Temporal history reached {events} events and "
            f"{size / 1024 / 1024:.1f} MB, near Temporal's limits of 50,000 events and "
            "50 MB per run; lower the agents' max_tool_rounds or split the crew"
        )
