"""Python SDK for the LoopLlama `/v1` API: sync and async clients, typed results.

    from loopllama import LoopLlama, approve

    client = LoopLlama()  # LOOPLLAMA_API_KEY, LOOPLLAMA_BASE_URL (default 127.0.0.1:8000)
    workflow = client.workflows.create(
        name="brief",
        crew=[{"role": "writer", "model": "loopllama-offline", "tools": ["send_email"]}],
        human_in_the_loop={"allow_input_requests": True,
                           "approval_required_tools": ["send_email"]},
    )

    def decide(run):
        if run.pending.kind == "input":
            return "Friendly and concise."   # the answer to the agent's question
        return approve()                     # or reject("why") for an approval

    run = client.runs.trigger_and_poll(workflow.id, "Draft a brief, ask me about tone.",
                                       on_waiting_input=decide)
    print(run.status, run.output)

`AsyncLoopLlama` has the same methods, awaited; its callbacks may be sync or async. The
package needs only httpx and pydantic (it never imports the server's code).

Polling. `runs.poll(run, interval=1.5, timeout=None, on_waiting_input=None)` GETs the
run every `interval` seconds. Intervals above 2 s are reduced to 2 s (the reference asks
for 1-2 s, so pauses are noticed promptly); values below 1 s are allowed, for tests and
local use. The callback is called once per pause (reads that lag an answer do not make
it answer twice); returning None means "not now" and it is asked again on the next poll.
When parallel agents are paused at once (`run.pauses`), it is called once for each, oldest
first, with the run whose `pending` is the pause it is asked about (`pending.role` names
the agent), and each reply is sent with its own pause's id.

Forks. `runs.fork(run, from_="critic", agents={"critic": {"instructions": "..."}})`
starts a new run of an ended run's crew again from one agent, with edits (`agents`,
`outputs` set by hand, a new `input`, `tools="replay"`); steps the edits do not touch
are reused (`Step.reused_from`), and `Run.forked_from` says where the fork came from.

Retries. Only 429 and 503 answers and failed connections are retried, up to
`max_retries` (default 2) times, waiting 0.5 s, 1 s, 2 s, ... (±25% jitter) or the
server's `Retry-After`. No other status is ever retried. `workflows.create` and
`runs.trigger` send an `Idempotency-Key` (one per call, the same on each retry), so the
server hands back what the first attempt made and they are resent after any
connection failure, like reads, PATCH, pause, resume and delete. `runs.respond` (and its
helpers) sends the pause id when it answers a `Run` it read (or is given `pause_id`);
only then is it resent after a connection broke mid-request, since the server refuses
an answer for a pause already answered (409). Without a pause id it is resent only when
the connection was never made, or after a 429/503 answer. `runs.cancel` and
`runs.retry` are not resent after a broken connection either.

Testing. Inject the HTTP layer: `AsyncLoopLlama(key, "http://testserver",
transport=httpx.ASGITransport(app=app))` calls an ASGI app in process. For the sync
client, either pass `http_client=httpx.Client(transport=...)` /
`transport=httpx.MockTransport(...)`, or serve the app with uvicorn on 127.0.0.1 in a
background thread and point `base_url` at it (what `tests/test_sdk.py` does, since
httpx has no sync transport for ASGI apps).
"""

from loopllama._async_client import AsyncLoopLlama, AsyncRuns, AsyncWorkflows
from loopllama._core import __version__
from loopllama._sync_client import LoopLlama, Runs, Workflows
from loopllama.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    LoopLlamaError,
    NotFoundError,
    PollTimeoutError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
)
from loopllama.types import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    Agent,
    CustomTool,
    Decision,
    ForkOrigin,
    HumanInTheLoop,
    McpServer,
    McpTool,
    Pending,
    RespondResult,
    Run,
    RunEvent,
    Step,
    Webhook,
    Workflow,
    WorkflowDeleted,
    approve,
    reject,
)
from loopllama.webhooks import WebhookVerificationError, sign_webhook, verify_webhook

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "Agent",
    "AsyncLoopLlama",
    "AsyncRuns",
    "AsyncWorkflows",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "CustomTool",
    "Decision",
    "ForkOrigin",
    "HumanInTheLoop",
    "InternalServerError",
    "LoopLlama",
    "LoopLlamaError",
    "McpServer",
    "McpTool",
    "NotFoundError",
    "Pending",
    "PollTimeoutError",
    "RateLimitError",
    "RequestTooLargeError",
    "RespondResult",
    "Run",
    "RunEvent",
    "Runs",
    "ServiceUnavailableError",
    "Step",
    "Webhook",
    "Workflow",
    "WorkflowDeleted",
    "Workflows",
    "__version__",
    "approve",
    "reject",
    "sign_webhook",
    "verify_webhook",
    "WebhookVerificationError",
]
