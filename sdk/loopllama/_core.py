"""The I/O-free core shared by the sync and async clients.

Everything the clients do is written once here as a *plan*: a generator that yields the
operations it needs (`Send` an HTTP request, `Sleep`, `Ask` the user's callback) and is
sent their results. Request building, retries, response parsing and the poll loop all
live in plans. `LoopLlama` and `AsyncLoopLlama` only perform the three operations, with
`httpx.Client`/`time.sleep` or `httpx.AsyncClient`/`asyncio.sleep`, and feed the
results back through a `Cursor`.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from loopllama.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    ConflictError,
    LoopLlamaError,
    PollTimeoutError,
    error_class_for,
)
from loopllama.types import (
    Agent,
    CustomTool,
    Decision,
    HumanInTheLoop,
    McpServer,
    Pending,
    RespondResult,
    Run,
    RunEvent,
    Webhook,
    Workflow,
    WorkflowDeleted,
)

__version__ = "0.1.0"

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

API_KEY_ENV = "LOOPLLAMA_API_KEY"
BASE_URL_ENV = "LOOPLLAMA_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2

# Retries: only where the server did nothing (429, 503) or no answer came back.
RETRYABLE_STATUSES = frozenset({429, 503})
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
MAX_RETRY_AFTER = 60.0
# Connection failures that prove the request never reached the server.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# The reference asks clients to poll every 1-2 s.
DEFAULT_POLL_INTERVAL = 1.5
MAX_POLL_INTERVAL = 2.0


# --- Configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """What every request needs: key, base URL, timeout and retry budget."""

    api_key: str = field(repr=False)
    base_url: str
    timeout: float
    max_retries: int

    @classmethod
    def resolve(
        cls,
        api_key: str | None,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        environ: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """Fill unset values from the environment and check them."""
        env = os.environ if environ is None else environ
        key = api_key if api_key is not None else env.get(API_KEY_ENV, "").strip()
        if not key:
            raise LoopLlamaError(
                f"No API key: pass api_key=... or set {API_KEY_ENV} (`loopllama dev` prints "
                "the key to use and keeps it in .loopllama/api-key)."
            )
        url = base_url or env.get(BASE_URL_ENV, "").strip() or DEFAULT_BASE_URL
        if not url.startswith(("http://", "https://")):
            raise LoopLlamaError(
                f"base_url must start with http:// or https://, got {url!r}."
            )
        url = url.rstrip("/")
        # `loopllama dev` prints the API URL with /v1; accept it as well as the root.
        if url.endswith("/v1"):
            url = url[: -len("/v1")]
        if timeout <= 0:
            raise LoopLlamaError(f"timeout must be positive, got {timeout!r}.")
        if max_retries < 0:
            raise LoopLlamaError(f"max_retries must be 0 or more, got {max_retries!r}.")
        return cls(api_key=key, base_url=url, timeout=float(timeout), max_retries=max_retries)


# --- Endpoints --------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint(Generic[T]):
    """One API call: method, path, JSON body, and how to read the answer's `data`.

    `replayable` says whether the request may be sent again after a connection broke
    mid-request (the server may or may not have acted). Creating a workflow and
    triggering a run carry an `Idempotency-Key` (one per call, the same on every retry),
    so the server returns what the first attempt made and they are replayable;
    responding to a run is not (a resent answer could answer the *next* pause).
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    replayable: bool = True
    idempotency_key: str | None = None


def _seg(value: str) -> str:
    """An id as one URL path segment (no `/` or `..` can escape it)."""
    if not isinstance(value, str) or not value:
        raise LoopLlamaError(f"ids must be non-empty strings, got {value!r}.")
    return quote(value, safe="")


_LIST: pydantic.TypeAdapter[list[Any]] = pydantic.TypeAdapter(list[Any])
_DICT: pydantic.TypeAdapter[dict[str, Any]] = pydantic.TypeAdapter(dict[str, Any])


def _one(model: type[M]) -> Callable[[Any], M]:
    return model.model_validate


def _many(model: type[M]) -> Callable[[Any], list[M]]:
    def parse(data: Any) -> list[M]:
        return [model.model_validate(item) for item in _LIST.validate_python(data)]

    return parse


def _model_json(value: pydantic.BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    # Only the fields set are sent, so the server's defaults apply to the rest.
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return dict(value)


def workflow_fields(
    name: str | None = None,
    description: str | None = None,
    crew: Sequence[Agent | Mapping[str, Any]] | None = None,
    human_in_the_loop: HumanInTheLoop | Mapping[str, Any] | None = None,
    tools: Sequence[CustomTool | Mapping[str, Any]] | None = None,
    webhooks: Sequence[Webhook | Mapping[str, Any]] | None = None,
    max_parallel: int | None = None,
    mcp_servers: Sequence[McpServer | Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON fields of a workflow body; None means "not given"."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if description is not None:
        body["description"] = description
    if crew is not None:
        body["crew"] = [_model_json(agent) for agent in crew]
    if human_in_the_loop is not None:
        body["human_in_the_loop"] = _model_json(human_in_the_loop)
    if tools is not None:
        body["tools"] = [_model_json(tool) for tool in tools]
    if webhooks is not None:
        body["webhooks"] = [_model_json(hook) for hook in webhooks]
    if max_parallel is not None:
        body["max_parallel"] = max_parallel
    if mcp_servers is not None:
        body["mcp_servers"] = [_mcp_server_json(server) for server in mcp_servers]
    return body


def _mcp_server_json(server: McpServer | Mapping[str, Any]) -> dict[str, Any]:
    # `tools` is read-only: the API lists the server's tools itself. A copy sent back
    # (say, from a workflow read earlier) could be stale, and the API would check the
    # agents' `mcp__...` names against it, so it is never sent.
    data = _model_json(server)
    data.pop("tools", None)
    return data


def create_workflow(body: Mapping[str, Any]) -> Endpoint[Workflow]:
    """POST /v1/workflows."""
    return Endpoint("POST", "/v1/workflows", _one(Workflow), body,
                    idempotency_key=str(uuid.uuid4()))


def list_workflows() -> Endpoint[list[Workflow]]:
    """GET /v1/workflows."""
    return Endpoint("GET", "/v1/workflows", _many(Workflow))


def get_workflow(workflow_id: str) -> Endpoint[Workflow]:
    """GET /v1/workflows/{id}."""
    return Endpoint("GET", f"/v1/workflows/{_seg(workflow_id)}", _one(Workflow))


def update_workflow(workflow_id: str, body: Mapping[str, Any]) -> Endpoint[Workflow]:
    """PATCH /v1/workflows/{id} (setting the same fields twice is harmless)."""
    if not body:
        raise LoopLlamaError(
            "update() needs at least one of: name, description, crew, human_in_the_loop, "
            "tools, webhooks, max_parallel, mcp_servers."
        )
    return Endpoint("PATCH", f"/v1/workflows/{_seg(workflow_id)}", _one(Workflow), body)


def delete_workflow(workflow_id: str) -> Endpoint[WorkflowDeleted]:
    """DELETE /v1/workflows/{id}."""
    return Endpoint("DELETE", f"/v1/workflows/{_seg(workflow_id)}", _one(WorkflowDeleted))


def set_workflow_status(workflow_id: str, verb: str) -> Endpoint[Workflow]:
    """POST /v1/workflows/{id}/pause or /resume."""
    return Endpoint("POST", f"/v1/workflows/{_seg(workflow_id)}/{verb}", _one(Workflow))


def _secret(data: Any) -> str:
    return str(_DICT.validate_python(data)["webhook_secret"])


def rotate_webhook_secret(workflow_id: str) -> Endpoint[str]:
    """POST /v1/workflows/{id}/webhook-secret. Not resent after a broken connection: a
    second rotation would make the first one's secret useless."""
    return Endpoint("POST", f"/v1/workflows/{_seg(workflow_id)}/webhook-secret", _secret,
                    replayable=False)


def trigger_run(workflow_id: str, text: str) -> Endpoint[Run]:
    """POST /v1/workflows/{id}/runs."""
    return Endpoint(
        "POST", f"/v1/workflows/{_seg(workflow_id)}/runs", _one(Run), {"input": text},
        idempotency_key=str(uuid.uuid4()),
    )


def list_runs(workflow_id: str) -> Endpoint[list[Run]]:
    """GET /v1/workflows/{id}/runs."""
    return Endpoint("GET", f"/v1/workflows/{_seg(workflow_id)}/runs", _many(Run))


def get_run(run_id: str) -> Endpoint[Run]:
    """GET /v1/runs/{id}."""
    return Endpoint("GET", f"/v1/runs/{_seg(run_id)}", _one(Run))


def respond_to_run(
    run_id: str, action: str, input: str | None = None, reason: str | None = None,
    pause_id: str | None = None,
) -> Endpoint[RespondResult]:
    """POST /v1/runs/{id}/respond.

    With a `pause_id` the answer can only land on that pause (a resend after it was
    taken gets 409), so it is safe to resend; without one it is never resent.
    """
    body: dict[str, Any] = {"action": action}
    if input is not None:
        body["input"] = input
    if reason is not None:
        body["reason"] = reason
    if pause_id is not None:
        body["pause_id"] = pause_id
    return Endpoint(
        "POST", f"/v1/runs/{_seg(run_id)}/respond", _one(RespondResult), body,
        replayable=pause_id is not None,
    )


def cancel_run(run_id: str) -> Endpoint[Run]:
    """POST /v1/runs/{id}/cancel. Not resent after a dropped connection: a second
    cancel of a run the first one ended answers 409."""
    return Endpoint("POST", f"/v1/runs/{_seg(run_id)}/cancel", _one(Run), replayable=False)


def retry_run(run_id: str) -> Endpoint[Run]:
    """POST /v1/runs/{id}/retry. Not resent after a dropped connection, for the same
    reason as cancel."""
    return Endpoint("POST", f"/v1/runs/{_seg(run_id)}/retry", _one(Run), replayable=False)


ForkTools = Literal["live", "replay"]


def fork_body(
    from_: str,
    agents: Mapping[str, Mapping[str, Any]] | None = None,
    outputs: Mapping[str, str] | None = None,
    input: str | None = None,
    tools: ForkTools = "live",
) -> dict[str, Any]:
    """The JSON body of a fork: `from` always, the rest only when given."""
    body: dict[str, Any] = {"from": from_}
    if agents:
        body["agents"] = {role: dict(change) for role, change in agents.items()}
    if outputs:
        body["outputs"] = dict(outputs)
    if input is not None:
        body["input"] = input
    if tools != "live":
        body["tools"] = tools
    return body


def fork_run(run_id: str, body: Mapping[str, Any]) -> Endpoint[Run]:
    """POST /v1/runs/{id}/fork. Not resent after a dropped connection: the endpoint
    takes no Idempotency-Key, so a resend could start a second fork."""
    return Endpoint("POST", f"/v1/runs/{_seg(run_id)}/fork", _one(Run), body,
                    replayable=False)


def pause_id_of(run: str | Run, pause_id: str | None) -> str | None:
    """The pause an answer is for: the one given, else the paused run's own."""
    if pause_id is not None or not isinstance(run, Run) or run.pending is None:
        return pause_id
    return run.pending.id


def run_id_of(run: str | Run) -> str:
    """Accept a run or its id wherever a run id is expected."""
    return run.id if isinstance(run, Run) else run


# --- Requests and answers ---------------------------------------------------------


def build_request(config: ClientConfig, endpoint: Endpoint[Any]) -> httpx.Request:
    """The HTTP request for `endpoint`, authenticated, with the client's timeout."""
    headers = {
        "Authorization": f"Bearer {config.api_key}",
        "Accept": "application/json",
        "User-Agent": f"loopllama-python/{__version__}",
    }
    if endpoint.idempotency_key is not None:
        headers["Idempotency-Key"] = endpoint.idempotency_key
    return httpx.Request(
        endpoint.method,
        config.base_url + endpoint.path,
        headers=headers,
        json=endpoint.body,
        extensions={"timeout": httpx.Timeout(config.timeout).as_dict()},
    )


def status_error(response: httpx.Response) -> APIStatusError:
    """The typed error for an error answer, carrying the server's type and message."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    error = body.get("error") if isinstance(body, dict) else None
    error_type = "api_error"
    message = ""
    if isinstance(error, dict):
        error_type = str(error.get("type") or error_type)
        message = str(error.get("message") or "")
    if not message:
        text = response.text.strip()
        message = text[:500] if text else response.reason_phrase or "Request failed."
    cls = error_class_for(response.status_code)
    return cls(response.status_code, error_type, message, body)


def parse_response(response: httpx.Response, endpoint: Endpoint[T]) -> T:
    """The typed `data` of a success answer; raise the typed error of any other."""
    if not response.is_success:
        raise status_error(response)
    try:
        payload = response.json()
    except ValueError as err:
        raise APIResponseValidationError(
            f"{endpoint.method} {endpoint.path} answered {response.status_code} "
            "with a body that is not JSON.",
            response.text,
        ) from err
    if not isinstance(payload, dict) or "data" not in payload:
        raise APIResponseValidationError(
            f"{endpoint.method} {endpoint.path} answered without the 'data' envelope.",
            payload,
        )
    try:
        return endpoint.parse(payload["data"])
    except pydantic.ValidationError as err:
        raise APIResponseValidationError(
            f"{endpoint.method} {endpoint.path} answered with an object this SDK cannot "
            f"read: {err}",
            payload,
        ) from err


def backoff(retry: int) -> float:
    """Seconds before retry number `retry` (0-based): 0.5, 1, 2, ... with ±25% jitter."""
    return min(MAX_BACKOFF, INITIAL_BACKOFF * 2**retry) * random.uniform(0.75, 1.25)


def retry_after(response: httpx.Response) -> float | None:
    """The server's `Retry-After` (seconds or HTTP date), capped; None when absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def connection_error(err: httpx.TransportError) -> APIConnectionError:
    """The SDK error for a request that got no answer."""
    if isinstance(err, httpx.TimeoutException):
        return APITimeoutError(f"The LoopLlama API did not answer in time ({err!r}).")
    return APIConnectionError(f"Could not reach the LoopLlama API ({err!r}).")


# --- Event streams ----------------------------------------------------------------


def stream_request(config: ClientConfig, run_id: str, last_event_id: int | None) -> httpx.Request:
    """GET /v1/runs/{id}/events, resuming after `last_event_id`; no read timeout (the
    server sends a keep-alive comment every 10 s, so a dead connection still shows)."""
    headers = {
        "Authorization": f"Bearer {config.api_key}",
        "Accept": "text/event-stream",
        "User-Agent": f"loopllama-python/{__version__}",
    }
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return httpx.Request(
        "GET", f"{config.base_url}/v1/runs/{_seg(run_id)}/events", headers=headers,
        extensions={"timeout": httpx.Timeout(config.timeout, read=STREAM_READ_TIMEOUT).as_dict()},
    )


# A keep-alive arrives every 10 s; three missed ones mean the connection is gone.
STREAM_READ_TIMEOUT = 30.0


class SSEParser:
    """Server-Sent Events framing: lines in, events out (comments are keep-alives)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> RunEvent | None:
        """One line (without its end); an event when a blank line completes one."""
        if line == "":
            fields, self._fields = self._fields, {}
            if "data" not in fields:
                return None
            payload = json.loads(fields["data"])
            return RunEvent.model_validate({**payload, "id": int(fields.get("id", "0"))})
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in self._fields:
            value = self._fields["data"] + "\n" + value
        self._fields[name] = value
        return None


def stream_reconnect_delay(failures: int, config: ClientConfig) -> float:
    """Seconds before reconnecting after `failures` broken connections in a row; raises
    once `config.max_retries` is spent."""
    if failures > config.max_retries:
        raise APIConnectionError(
            f"The event stream broke {failures} times in a row; giving up (max_retries)."
        )
    return backoff(failures - 1)


# --- Plans ------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Operation: send `request`; the result is the `httpx.Response` (body read)."""

    request: httpx.Request


@dataclass(frozen=True)
class Sleep:
    """Operation: wait `seconds`; the result is None."""

    seconds: float


@dataclass(frozen=True)
class Ask:
    """Operation: call the user's callback with `run` (whose `pending` is the pause it is
    asked about); the result is its (awaited) value."""

    callback: Callable[[Run], Any]
    run: Run


Op = Send | Sleep | Ask
Plan = Generator[Op, Any, T]


def request_plan(config: ClientConfig, endpoint: Endpoint[T]) -> Plan[T]:
    """Send `endpoint`'s request, retrying what is safe to retry, and parse the answer.

    Retried, up to `config.max_retries` times with backoff (or the server's
    `Retry-After`): 429 answers for every call; 503 answers and failed connections for
    `endpoint.replayable` calls (a 503 may come after a change was handed to Temporal,
    which still applies it), and for every call when the request never left (connect
    error or connect timeout). No other status is retried.
    """
    retries = 0
    while True:
        try:
            response: httpx.Response = yield Send(build_request(config, endpoint))
        except httpx.TransportError as err:
            may_resend = endpoint.replayable or isinstance(err, _NEVER_SENT)
            if not may_resend or retries >= config.max_retries:
                raise connection_error(err) from err
            yield Sleep(backoff(retries))
            retries += 1
            continue
        if _may_retry(response.status_code, endpoint) and retries < config.max_retries:
            delay = retry_after(response)
            yield Sleep(backoff(retries) if delay is None else delay)
            retries += 1
            continue
        return parse_response(response, endpoint)


def _may_retry(status: int, endpoint: Endpoint[Any]) -> bool:
    # 429 means nothing was done. A 503 can come after the server handed a change to
    # Temporal (no worker confirmed it in time, but it still applies later), so only
    # calls that are safe to repeat are retried on it.
    return status == 429 or (status in RETRYABLE_STATUSES and endpoint.replayable)


OnWaitingInput = Callable[[Run], Any]


def poll_interval(interval: float) -> float:
    """The interval poll() uses: at most 2 s; below 1 s only because you asked."""
    if interval <= 0:
        raise LoopLlamaError(f"interval must be positive, got {interval!r}.")
    return min(float(interval), MAX_POLL_INTERVAL)


def pause_key(run: Run, pause: Pending) -> tuple[Any, ...]:
    """What tells one pause of `run` from every other, answered or not."""
    if pause.id is not None:
        return (pause.id,)
    # A server without pause ids: a new pause always follows another model call, which
    # moves the token counts, so an identical key means "the pause we already answered".
    return (pause.model_dump_json(), run.total_steps, run.tokens_in, run.tokens_out)


def asking_about(run: Run, pause: Pending) -> Run:
    """`run` as a callback sees it when asked about `pause`: `pending` is that pause
    (`pauses` still lists every open one), so `run.pending` and `runs.respond(run, ...)`
    mean this pause."""
    if run.pending is pause:
        return run
    return run.model_copy(update={"pending": pause})


def _reply_endpoint(run: Run, reply: Any) -> Endpoint[RespondResult]:
    pause_id = run.pending.id if run.pending is not None else None
    if isinstance(reply, str):
        return respond_to_run(run.id, "input", input=reply, pause_id=pause_id)
    if isinstance(reply, Decision):
        return respond_to_run(
            run.id, reply.action, input=reply.input, reason=reply.reason, pause_id=pause_id
        )
    raise TypeError(
        "on_waiting_input must return the answer text (str), loopllama.approve(), "
        f"loopllama.reject(reason), or None to answer later; got {type(reply).__name__}."
    )


def poll_plan(
    config: ClientConfig,
    run_id: str,
    interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float | None = None,
    on_waiting_input: OnWaitingInput | None = None,
) -> Plan[Run]:
    """GET the run every `interval` seconds until it is completed, failed or cancelled.

    On `waiting_input`: without a callback, return the paused run; with one, call it once
    for each open pause not answered yet, oldest first, with the run whose `pending` is
    that pause, and send its reply with respond and that pause's id (None: reply later,
    ask again on the next poll). No pause is answered twice, however far reads lag. A
    409 from respond means someone else answered first (or the run moved on): polling
    goes on. `PollTimeoutError` once `timeout` seconds have passed.
    """
    every = poll_interval(interval)
    if timeout is not None and timeout < 0:
        raise LoopLlamaError(f"timeout must be 0 or more, got {timeout!r}.")
    deadline = None if timeout is None else time.monotonic() + timeout
    answered: set[tuple[Any, ...]] = set()
    while True:
        run = yield from request_plan(config, get_run(run_id))
        if run.is_terminal:
            return run
        if run.is_waiting:
            if on_waiting_input is None:
                return run
            replied = False
            for pause in run.open_pauses:
                key = pause_key(run, pause)
                if key in answered:
                    continue  # a read that lags our answer
                asked = asking_about(run, pause)
                reply = yield Ask(on_waiting_input, asked)
                if reply is None:
                    continue  # not now: asked again after the next read
                try:
                    yield from request_plan(config, _reply_endpoint(asked, reply))
                except ConflictError:
                    pass  # answered by someone else, or no longer paused
                answered.add(key)
                replied = True
            if replied:
                continue  # read again at once: the run has moved on
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            assert timeout is not None
            raise PollTimeoutError(run, timeout)
        yield Sleep(every if deadline is None else min(every, deadline - now))


def trigger_and_poll_plan(
    config: ClientConfig,
    workflow_id: str,
    text: str,
    interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float | None = None,
    on_waiting_input: OnWaitingInput | None = None,
) -> Plan[Run]:
    """Trigger a run, then poll it (see `poll_plan`)."""
    poll_interval(interval)  # refuse a bad interval before anything is triggered
    run = yield from request_plan(config, trigger_run(workflow_id, text))
    return (yield from poll_plan(config, run.id, interval, timeout, on_waiting_input))


class Cursor(Generic[T]):
    """Steps a plan: `op` is what to do next; `resolve`/`fail` hand back the outcome."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self.done = False
        self.result: T
        self.op: Op
        self._advance(lambda: next(plan))

    def resolve(self, value: Any) -> None:
        """The current operation succeeded with `value`."""
        self._advance(lambda: self._plan.send(value))

    def fail(self, error: BaseException) -> None:
        """The current operation raised `error`; the plan may handle it or re-raise."""
        self._advance(lambda: self._plan.throw(error))

    def _advance(self, step: Callable[[], Op]) -> None:
        try:
            self.op = step()
        except StopIteration as stop:
            self.done = True
            self.result = stop.value
