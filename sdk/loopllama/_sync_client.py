"""`LoopLlama`, the synchronous client: performs the core's plans with `httpx.Client`."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from loopllama import _core
from loopllama._core import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    Ask,
    ClientConfig,
    Cursor,
    Endpoint,
    ForkTools,
    Op,
    Plan,
    Send,
)
from loopllama.errors import LoopLlamaError
from loopllama.types import (
    Agent,
    CustomTool,
    Decision,
    HumanInTheLoop,
    McpServer,
    RespondResult,
    Run,
    RunEvent,
    Webhook,
    Workflow,
    WorkflowDeleted,
)

T = TypeVar("T")

#: A sync `on_waiting_input` callback: the answer text, a `Decision`, or None (not now).
WaitingInputHandler = Callable[[Run], "str | Decision | None"]


class LoopLlama:
    """Synchronous client of the LoopLlama `/v1` API.

    `api_key` and `base_url` default to `LOOPLLAMA_API_KEY` and `LOOPLLAMA_BASE_URL`
    (else ``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted). `timeout` applies
    to each HTTP request. `max_retries` bounds the automatic retries of 429/503 answers
    and failed connections (see `_core.request_plan` for exactly which). Pass
    `http_client` (an `httpx.Client` you own and close) or `transport` (e.g. an
    `httpx.MockTransport` or `httpx.WSGITransport`) to control the HTTP layer.

    Use as a context manager, or call `close()`, to release the connection pool.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise LoopLlamaError("Pass http_client or transport, not both.")
        self._config = ClientConfig.resolve(api_key, base_url, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=timeout)
        self.workflows = Workflows(self)
        self.runs = Runs(self)

    @property
    def base_url(self) -> str:
        """The API root requests go to (without ``/v1``)."""
        return self._config.base_url

    def __repr__(self) -> str:
        return f"LoopLlama(base_url={self._config.base_url!r})"

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> LoopLlama:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Send):
            return self._http.send(op.request)
        if isinstance(op, Ask):
            reply = op.callback(op.run)
            if inspect.isawaitable(reply):
                if inspect.iscoroutine(reply):
                    reply.close()
                raise TypeError(
                    "on_waiting_input returned an awaitable; use AsyncLoopLlama for async "
                    "callbacks."
                )
            return reply
        time.sleep(op.seconds)
        return None

    def _execute(self, plan: Plan[T]) -> T:
        cursor = Cursor(plan)
        while not cursor.done:
            try:
                value = self._perform(cursor.op)
            except Exception as err:  # handed to the plan, which handles or re-raises it
                cursor.fail(err)
            else:
                cursor.resolve(value)
        return cursor.result

    def _request(self, endpoint: Endpoint[T]) -> T:
        return self._execute(_core.request_plan(self._config, endpoint))


class Workflows:
    """`client.workflows`: crew definitions."""

    def __init__(self, client: LoopLlama) -> None:
        self._client = client

    def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        crew: Sequence[Agent | Mapping[str, Any]] | None = None,
        description: str | None = None,
        human_in_the_loop: HumanInTheLoop | Mapping[str, Any] | None = None,
        tools: Sequence[CustomTool | Mapping[str, Any]] | None = None,
        webhooks: Sequence[Webhook | Mapping[str, Any]] | None = None,
        max_parallel: int | None = None,
        mcp_servers: Sequence[McpServer | Mapping[str, Any]] | None = None,
    ) -> Workflow:
        """Create a workflow from keywords, or from a dict body (keywords override it).

        `tools` declares custom tools (name, description, input_schema, url) that agents
        may list in their own `tools`; `webhooks` where to POST which run events. An
        agent's `after` makes the crew a graph (see `Agent`); `max_parallel` (1-64, the
        server's default 8) is how many agents of one run may work at once.

        `mcp_servers` (at most 8; dicts or `McpServer`) are remote MCP servers whose
        tools agents list as ``mcp__<server>__<tool>``, or ``mcp__<server>`` for all of
        them (the same names go in `approval_required_tools`). The API lists each
        server's tools before it answers (a 400 if one cannot be reached); `tools` of a
        server is read-only and not sent. A header value ``"env:NAME"`` is read from the
        environment of LoopLlama's worker (and API), so the secret stays out of the
        workflow.
        """
        body = {**(spec or {}), **_core.workflow_fields(name, description, crew,
                                                         human_in_the_loop, tools, webhooks,
                                                         max_parallel, mcp_servers)}
        return self._client._request(_core.create_workflow(body))

    def list(self) -> list[Workflow]:
        """Every workflow, newest first."""
        return self._client._request(_core.list_workflows())

    def get(self, workflow_id: str) -> Workflow:
        """One workflow; `NotFoundError` if there is none with that id."""
        return self._client._request(_core.get_workflow(workflow_id))

    def update(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        crew: Sequence[Agent | Mapping[str, Any]] | None = None,
        human_in_the_loop: HumanInTheLoop | Mapping[str, Any] | None = None,
        tools: Sequence[CustomTool | Mapping[str, Any]] | None = None,
        webhooks: Sequence[Webhook | Mapping[str, Any]] | None = None,
        max_parallel: int | None = None,
        mcp_servers: Sequence[McpServer | Mapping[str, Any]] | None = None,
        **fields: Any,
    ) -> Workflow:
        """Change the given fields (others stay); extra keywords are sent as they are.

        `mcp_servers` replaces the whole list (dicts or `McpServer`; their `tools` are
        not sent), and the API lists each server's tools afresh; agents' ``mcp__...``
        tool names must then name tools the servers list.
        """
        body = {**fields, **_core.workflow_fields(name, description, crew, human_in_the_loop,
                                                   tools, webhooks, max_parallel,
                                                   mcp_servers)}
        return self._client._request(_core.update_workflow(workflow_id, body))

    def delete(self, workflow_id: str) -> WorkflowDeleted:
        """Delete a workflow; its runs stay readable."""
        return self._client._request(_core.delete_workflow(workflow_id))

    def pause(self, workflow_id: str) -> Workflow:
        """Refuse new runs (`ConflictError` on trigger) until resumed."""
        return self._client._request(_core.set_workflow_status(workflow_id, "pause"))

    def resume(self, workflow_id: str) -> Workflow:
        """Accept new runs again."""
        return self._client._request(_core.set_workflow_status(workflow_id, "resume"))

    def rotate_webhook_secret(self, workflow_id: str) -> str:
        """A new webhook signing secret (shown only now); deliveries are signed with it
        from now on."""
        return self._client._request(_core.rotate_webhook_secret(workflow_id))


class Runs:
    """`client.runs`: trigger, read, answer and wait for runs."""

    def __init__(self, client: LoopLlama) -> None:
        self._client = client

    def trigger(self, workflow_id: str, input: str) -> Run:
        """Queue a run of the workflow on `input`; returns it in ``queued``.

        Safe to retry: it carries an `Idempotency-Key`, so a resent request returns the
        run the first attempt started.
        """
        return self._client._request(_core.trigger_run(workflow_id, input))

    def list(self, workflow_id: str) -> list[Run]:
        """The workflow's 50 most recent runs, newest first, without steps."""
        return self._client._request(_core.list_runs(workflow_id))

    def get(self, run: str | Run) -> Run:
        """One run, steps included."""
        return self._client._request(_core.get_run(_core.run_id_of(run)))

    def respond(
        self,
        run: str | Run,
        action: str,
        input: str | None = None,
        reason: str | None = None,
        *,
        pause_id: str | None = None,
    ) -> RespondResult:
        """Answer a paused run: action ``"input"`` (with `input`), ``"approve"`` or
        ``"reject"`` (optional `reason`). `ConflictError` if the run is not paused or
        the pause was already answered, `BadRequestError` if the action does not match
        `pending.kind`.

        The answer names its pause: `pause_id`, or the `pending.id` of `run` when you
        pass the paused `Run` itself. Only an answer that names its pause is resent
        after a dropped connection.
        """
        return self._client._request(
            _core.respond_to_run(
                _core.run_id_of(run), action, input, reason, _core.pause_id_of(run, pause_id)
            )
        )

    def cancel(self, run: str | Run) -> Run:
        """Cancel a run that has not ended; returns it, ``cancelled`` once the worker
        has stopped it. `ConflictError` if it has already ended."""
        return self._client._request(_core.cancel_run(_core.run_id_of(run)))

    def retry(self, run: str | Run) -> Run:
        """Go on with a failed run from its failed step (earlier steps are not run
        again). `ConflictError` unless the run is ``failed``."""
        return self._client._request(_core.retry_run(_core.run_id_of(run)))

    def fork(
        self,
        run: str | Run,
        *,
        from_: str,
        agents: Mapping[str, Mapping[str, Any]] | None = None,
        outputs: Mapping[str, str] | None = None,
        input: str | None = None,
        tools: ForkTools = "live",
    ) -> Run:
        """Start a new run of an ended run's crew again from one step, with edits.

        `from_` is the role of the agent to start again from. `agents` changes agents
        for the fork only (per role: any of ``instructions``, ``model``, ``max_tokens``,
        ``tools``); `outputs` sets steps' outputs by hand (those steps do not run);
        `input` gives the fork a new input (then every step not in `outputs` runs
        again). Steps the edits do not touch, upstream of `from_`, are reused: copied
        from the source (`Step.reused_from`) and not paid for again. `tools="replay"`
        answers the re-run steps' tool calls from the source run's record instead of
        calling the tools (`Step.replay_misses` counts calls it had no record for).

        Returns the new run, ``queued``, with `forked_from` set; `poll()` it like any
        run. `ConflictError` unless the source has ended (completed, failed or
        cancelled), or when its workflow is paused; `BadRequestError` naming a role or
        field that does not fit. Not resent after a dropped connection.
        """
        return self._client._request(
            _core.fork_run(_core.run_id_of(run),
                           _core.fork_body(from_, agents, outputs, input, tools))
        )

    def answer(self, run: str | Run, text: str) -> RespondResult:
        """Answer a paused run's question (pending kind ``"input"``)."""
        return self.respond(run, "input", input=text)

    def approve(self, run: str | Run) -> RespondResult:
        """Approve a paused run's pending action (pending kind ``"approval"``)."""
        return self.respond(run, "approve")

    def reject(self, run: str | Run, reason: str | None = None) -> RespondResult:
        """Decline a paused run's pending action; `reason` goes back to the agent."""
        return self.respond(run, "reject", reason=reason)

    def poll(
        self,
        run: str | Run,
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        on_waiting_input: WaitingInputHandler | None = None,
    ) -> Run:
        """Wait for the run to complete, fail or be cancelled, answering pauses with a callback.

        GETs the run every `interval` seconds (at most 2 s, as the reference advises;
        values below 1 s are allowed for tests and local use). When the run is
        ``waiting_input``: without `on_waiting_input`, returns the paused run; with it,
        calls ``on_waiting_input(run)`` and sends what it returns — the answer text for
        kind ``"input"``, `loopllama.approve()` / `loopllama.reject(reason)` for kind
        ``"approval"`` — or, for None, answers nothing now and asks again on the next
        poll. A run may pause many times, and parallel agents may be paused at once:
        the callback is called once for each open pause not answered yet, oldest first,
        with the run whose `pending` is that pause (`pending.role` names its agent;
        `pauses` still lists all), and the reply is sent with that pause's id. No pause
        is answered twice. A 409 from respond (someone else answered first) is not an
        error. Raises `PollTimeoutError` (with the last run) once
        `timeout` seconds have passed, callback time included; None waits forever.
        """
        return self._client._execute(
            _core.poll_plan(
                self._client._config, _core.run_id_of(run), interval, timeout,
                on_waiting_input,
            )
        )

    def stream(self, run: str | Run, last_event_id: int | None = None) -> Iterator[RunEvent]:
        """The run's events as they happen: every event after `last_event_id` (from the
        first without it), then live ones, ending after the run's end.

        A dropped connection is resumed where it broke (with `Last-Event-ID`), up to
        `max_retries` times in a row; 429 and 503 answers are retried the same way.
        """
        config = self._client._config
        run_id, last, failures = _core.run_id_of(run), last_event_id, 0
        while True:
            parser = _core.SSEParser()
            try:
                response = self._client._http.send(
                    _core.stream_request(config, run_id, last), stream=True
                )
                try:
                    if response.status_code in _core.RETRYABLE_STATUSES:
                        raise httpx.TransportError(f"answered {response.status_code}")
                    if response.status_code >= 400:
                        response.read()
                        raise _core.status_error(response)
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures, last = 0, event.id
                        yield event
                        if event.is_terminal:
                            return
                finally:
                    response.close()
                # A clean end without the run's end: the server had nothing more to tell.
                return
            except httpx.TransportError:
                failures += 1
                time.sleep(_core.stream_reconnect_delay(failures, config))

    def trigger_and_poll(
        self,
        workflow_id: str,
        input: str,
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        on_waiting_input: WaitingInputHandler | None = None,
    ) -> Run:
        """`trigger()` then `poll()` the new run with the same keywords."""
        return self._client._execute(
            _core.trigger_and_poll_plan(
                self._client._config, workflow_id, input, interval, timeout, on_waiting_input
            )
        )
