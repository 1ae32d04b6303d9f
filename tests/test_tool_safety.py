"""Tools that a model cannot turn against the people running it (issue 11, item 5).

Email: no header value with a line break is sent; SMTP credentials travel only over TLS;
an email the server accepted counts as delivered even if the goodbye fails. HTTP tools:
the connection goes to the address that passed the network check (no second lookup),
the model cannot set Host, Idempotency-Key, hop-by-hop or credential headers, custom
tools use https unless allow-listed, and a timeout says so.

The end-to-end tests run a real worker and the fake Anthropic server; the rest call the
activities directly (in Temporal's ActivityEnvironment) against the real SMTP and HTTP
fakes, with a resolver and a network backend the test controls where DNS is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import httpcore
import httpx
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.email_tool import LINE_BREAKS, EmailTool, SmtpConfig
from activities.http_tools import TOOL_TIMEOUT, HttpTools, tool_http_client
from core.settings import Secret, Settings
from core.types import CustomToolConfig, ToolCall, ToolResult
from tests.conftest import for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.smtp_server import Certificate, FakeSmtp, Login, make_certificate
from tests.fakes.tool_server import ToolServer
from tests.helpers import create_workflow, trigger, wait_for_status
from worker import build_worker

EMAIL = {"to": "bob@example.com", "subject": "Launch day", "body": "We launch on Monday."}
SENDER = "crew@example.com"
# A public address the tests "own": their network backend routes it to 127.0.0.1.
PUBLIC = "93.184.215.14"
CRM_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"contact": {"type": "string"}}, "required": ["contact"],
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """One self-signed certificate for 127.0.0.1 (the SMTP fake) and tools.test."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return make_certificate(tmp_path_factory.mktemp("tls"), "127.0.0.1", "tools.test")


@pytest.fixture
def tls_tool_server(certificate: Certificate) -> Iterator[ToolServer]:
    with ToolServer(tls=certificate.server_context()) as server:
        yield server


# ---------------------------------------------------------------------------- helpers


def tool_call(name: str, tool_input: dict[str, Any], *, url: str | None = None) -> ToolCall:
    custom = None
    if url is not None:
        custom = CustomToolConfig(name=name, description="Update the CRM.", input_schema=CRM_SCHEMA,
                            url=url)
    return ToolCall(run_id="ckruntest", tool_use_id="toolu_1", name=name, input=tool_input,
                    custom=custom, step=0, round=0, position=0)


async def run_activity(method: Callable[[ToolCall], Awaitable[ToolResult]],
                       call: ToolCall) -> ToolResult:
    return await ActivityEnvironment().run(method, call)


def email_tool(smtp_url: str, tls: ssl.SSLContext | None = None) -> EmailTool:
    return EmailTool(SmtpConfig.from_url(Secret(smtp_url)), SENDER, tls_context=tls)


class CountingResolver:
    """Answers from a script: the first lookup gets `answers[0]`, later ones the rest."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self._answers[min(len(self.lookups), len(self._answers)) - 1]


class RoutedBackend(httpcore.AsyncNetworkBackend):
    """Opens real connections, recording each target; `routes` maps an address to the
    one that serves it here (a stand-in for the internet)."""

    def __init__(self, routes: dict[str, str] | None = None, *, hang: bool = False) -> None:
        self._routes = routes or {}
        self._hang = hang
        self._inner = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self, host: str, port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if self._hang:  # a host that never answers the SYN
            await asyncio.sleep(timeout or 60)
            raise httpcore.ConnectTimeout("no answer")
        return await self._inner.connect_tcp(
            self._routes.get(host, host), port, timeout=timeout,
            local_address=local_address, socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def tool_uses(*calls: tuple[str, dict[str, Any]], when: Callable[[dict[str, Any]], bool]
              ) -> Reply:
    return Reply(
        content=[
            {"type": "tool_use", "id": f"toolu_{unique_tag()}{n}", "name": name, "input": args}
            for n, (name, args) in enumerate(calls)
        ],
        stop_reason="tool_use",
        when=when,
    )


def only_answer(fake: FakeAnthropic, tool_use_id: str) -> dict[str, Any]:
    found = [
        block for request in fake.requests for block in request.tool_results
        if block["tool_use_id"] == tool_use_id
    ]
    assert len(found) == 1, found
    return found[0]


async def tool_attempts(temporal: Client, run_id: str, name: str) -> list[int]:
    """The attempt number each `name` activity of the run finished on (1: no retry)."""
    history = await temporal.get_workflow_handle(run_id).fetch_history()
    scheduled = {
        event.event_id: event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and scheduled[event.activity_task_started_event_attributes.scheduled_event_id] == name
    ]


@pytest.fixture
async def mail_worker(temporal: Client, settings: Settings
                      ) -> AsyncIterator[Callable[[str], Awaitable[None]]]:
    """Starts a worker on the test's task queue with LOOPLLAMA_SMTP_URL set to a URL."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(url: str) -> None:
            own = replace(settings, smtp_url=Secret(url), smtp_from=SENDER)
            await stack.enter_async_context(build_worker(temporal, own))

        yield start


async def mail_run(api: httpx.AsyncClient, fake: FakeAnthropic,
                   *emails: dict[str, Any]) -> tuple[str, Reply]:
    """A run whose mailer sends `emails` in one round (no approval), then finishes."""
    tag = unique_tag()
    mailer = for_role(tag, "mailer")
    calls = fake.enqueue(tool_uses(*(("send_email", email) for email in emails), when=mailer))
    fake.reply_text("Done.", when=mailer)
    workflow = await create_workflow(api, _crew("mailer", tag, ["send_email"]))
    run_id = str((await trigger(api, workflow["id"], "Tell Bob."))["id"])
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    return run_id, calls


def _crew(role: str, tag: str, tools: list[str]) -> list[dict[str, Any]]:
    return [{"role": role, "model": "claude-sonnet-4-6", "tools": tools,
             "instructions": f"You are the {role}. [{tag}]"}]


# ------------------------------------------------------------------ email: header values


def test_line_breaks_are_exactly_what_splitlines_splits_on() -> None:
    splitting = {chr(code) for code in range(0x110000)
                 if len(f"a{chr(code)}b".splitlines()) == 2}
    assert set(LINE_BREAKS) == splitting


@pytest.mark.parametrize("field", ["to", "subject", "sender"])
async def test_a_line_break_in_any_header_value_is_refused_before_sending(field: str) -> None:
    with FakeSmtp() as smtp:
        for char in sorted(LINE_BREAKS):
            for value in (f"Launch{char}Bcc: eve@example.com", f"Launch day{char}"):
                if field == "to":
                    value = value.replace("Launch", "bob@example.com", 1)
                email = {**EMAIL, field: value} if field != "sender" else EMAIL
                tool = EmailTool(SmtpConfig.from_url(Secret(smtp.url)),
                                 value if field == "sender" else SENDER)
                result = await run_activity(tool.send, tool_call("send_email", email))
                assert result.is_error, (field, value)
                assert f"line break (U+{ord(char):04X})" in result.content, result.content
                assert "not sent" in result.content
        assert smtp.connections == 0  # refused before any SMTP traffic
        assert smtp.messages() == []
        # The same tool sends a clean email: the refusals were about the line breaks.
        tool = EmailTool(SmtpConfig.from_url(Secret(smtp.url)), SENDER)
        sent = await run_activity(tool.send, tool_call("send_email", EMAIL))
        assert not sent.is_error, sent.content
        assert len(smtp.messages()) == 1


async def test_line_breaks_that_pass_the_input_schema_end_as_a_tool_error_not_retried(
    api: httpx.AsyncClient, temporal: Client, fake_anthropic: FakeAnthropic,
    mail_worker: Callable[[str], Awaitable[None]],
) -> None:
    with FakeSmtp() as smtp:
        await mail_worker(smtp.url)
        run_id, calls = await mail_run(
            api, fake_anthropic,
            {**EMAIL, "subject": "Launch day\n"},  # "$" in the schema's pattern allows it
            {**EMAIL, "subject": "Launch\u2028Bcc: eve@example.com"},
            {**EMAIL, "to": "bob@example.com\n"},
        )
        for block in calls.content:
            result = only_answer(fake_anthropic, block["id"])
            assert result["is_error"] is True, result
            # Whichever layer catches it (input schema or the tool), it says what is wrong.
            assert "line break" in result["content"] or "Invalid input" in result["content"]
        assert smtp.connections == 0
        assert smtp.messages() == []
        assert all(attempt == 1 for attempt in await tool_attempts(temporal, run_id,
                                                                   "send_email"))


# ------------------------------------------------------------ email: credentials and TLS


async def test_credentials_are_never_sent_without_tls(
    api: httpx.AsyncClient, temporal: Client, fake_anthropic: FakeAnthropic,
    mail_worker: Callable[[str], Awaitable[None]],
) -> None:
    # The server would take the login in clear text; the worker must not offer it.
    with FakeSmtp(users={"crew": "s3cret"}) as smtp:
        await mail_worker(smtp.url_with_login("crew", "s3cret"))
        run_id, calls = await mail_run(api, fake_anthropic, EMAIL)
        result = only_answer(fake_anthropic, calls.content[0]["id"])
        assert result["is_error"] is True
        assert "only over TLS" in result["content"], result["content"]
        assert "smtps://" in result["content"] and "STARTTLS" in result["content"]
        assert "s3cret" not in result["content"]
        assert smtp.logins == []
        assert smtp.messages() == []
        assert smtp.connections == 1  # refused at once, not retried
        assert await tool_attempts(temporal, run_id, "send_email") == [1]


async def test_credentials_go_over_starttls(certificate: Certificate) -> None:
    with FakeSmtp(tls="starttls", certificate=certificate, users={"crew": "s3cret"}) as smtp:
        tool = email_tool(smtp.url_with_login("crew", "s3cret"), certificate.client_context())
        result = await run_activity(tool.send, tool_call("send_email", EMAIL))
        assert not result.is_error, result.content
        assert smtp.logins == [Login("crew", "s3cret", encrypted=True)]
        (mail,) = smtp.messages()
        assert mail.recipients == ["bob@example.com"]


async def test_credentials_go_over_smtps(certificate: Certificate) -> None:
    with FakeSmtp(tls="smtps", certificate=certificate, users={"crew": "s3cret"}) as smtp:
        assert smtp.url.startswith("smtps://")
        tool = email_tool(smtp.url_with_login("crew", "s3cret"), certificate.client_context())
        result = await run_activity(tool.send, tool_call("send_email", EMAIL))
        assert not result.is_error, result.content
        assert smtp.logins == [Login("crew", "s3cret", encrypted=True)]
        assert len(smtp.messages()) == 1


async def test_a_failed_starttls_sends_no_credentials(certificate: Certificate) -> None:
    # The worker does not trust this certificate: TLS fails, and there is no fallback.
    with FakeSmtp(tls="starttls", certificate=certificate, users={"crew": "s3cret"}) as smtp:
        tool = email_tool(smtp.url_with_login("crew", "s3cret"), ssl.create_default_context())
        result = await run_activity(tool.send, tool_call("send_email", EMAIL))
        assert result.is_error
        assert "certificate could not be verified" in result.content, result.content
        assert smtp.logins == []
        assert smtp.messages() == []


# ------------------------------------------------------- email: accepted means delivered


async def test_an_accepted_email_whose_quit_fails_is_delivered_once(
    api: httpx.AsyncClient, temporal: Client, fake_anthropic: FakeAnthropic,
    mail_worker: Callable[[str], Awaitable[None]],
) -> None:
    with FakeSmtp(after_accept="quit_fails") as smtp:
        await mail_worker(smtp.url)
        run_id, calls = await mail_run(api, fake_anthropic, EMAIL)
        result = only_answer(fake_anthropic, calls.content[0]["id"])
        assert result["is_error"] is False, result
        assert "Email sent to bob@example.com" in result["content"]
        assert len(smtp.messages()) == 1
        assert smtp.connections == 1
        assert await tool_attempts(temporal, run_id, "send_email") == [1]


async def test_an_accepted_email_whose_connection_drops_is_delivered() -> None:
    with FakeSmtp(after_accept="drop") as smtp:
        result = await run_activity(email_tool(smtp.url).send, tool_call("send_email", EMAIL))
        assert not result.is_error, result.content
        assert len(smtp.messages()) == 1


# ------------------------------------------------------------------ HTTP: what is sent


async def test_the_model_cannot_set_host_idempotency_hop_by_hop_or_credential_headers(
    tool_server: ToolServer,
) -> None:
    forbidden = {
        "Host": "internal.example", "idempotency-key": "forged", "Connection": "close",
        "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic eDp5",
        "Proxy-Connection": "keep-alive", "TE": "trailers", "Trailer": "X-Sum",
        "Transfer-Encoding": "chunked", "Upgrade": "h2c", "Authorization": "Bearer stolen",
        "Cookie": "session=stolen", "X-Api-Key": "stolen", "X-Auth-Token": "stolen",
        "Content-Length": "999",
    }
    allowed = {"Accept": "application/json", "X-Trace": "abc"}
    tools = HttpTools(tool_http_client(), ("127.0.0.1",))
    call = tool_call("http_request", {"method": "POST", "url": tool_server.url("/hook"),
                                      "headers": {**forbidden, **allowed}, "body": "{}"})
    result = await run_activity(tools.http_request, call)

    assert not result.is_error, result.content
    (request,) = tool_server.requests()
    headers = request.headers
    assert headers["host"] == f"127.0.0.1:{tool_server.port}"
    assert headers["idempotency-key"] == "ckruntest:0:0:0"
    assert headers["content-length"] == "2"
    assert headers["connection"] == "keep-alive"  # the client's own, not the model's
    for name in ("keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
                 "transfer-encoding", "upgrade", "authorization", "cookie", "x-api-key",
                 "x-auth-token"):
        assert name not in headers, (name, headers)
    assert headers["accept"] == "application/json" and headers["x-trace"] == "abc"
    # The model is told what was withheld.
    first_line = result.content.splitlines()[0]
    for name in forbidden:
        assert name in first_line, first_line
    assert result.content.splitlines()[1] == "HTTP 200"


async def test_a_header_value_with_a_line_break_is_refused(tool_server: ToolServer) -> None:
    tools = HttpTools(tool_http_client(), ("127.0.0.1",))
    for headers in ({"X-Note": "a\r\nX-Injected: 1"}, {"X-Note": "line\u2028two"},
                    {"Bad Name": "x"}):
        call = tool_call("http_request", {"url": tool_server.url(), "headers": headers})
        result = await run_activity(tools.http_request, call)
        assert result.is_error and "Request refused" in result.content, result.content
    call = tool_call("http_request", {"url": tool_server.url().replace("://", "://u:p@")})
    result = await run_activity(tools.http_request, call)
    assert result.is_error and "user name or password" in result.content, result.content
    assert tool_server.requests() == []


# ------------------------------------------------------------ HTTP: the checked address


async def test_an_allowlisted_name_is_resolved_once_and_that_address_is_called(
    tool_server: ToolServer,
) -> None:
    # One lookup per call; a third lookup would answer 127.0.0.2, where nothing listens.
    resolver = CountingResolver(["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"])
    tools = HttpTools(tool_http_client(), ("tools.test",), resolver=resolver)
    for _ in range(2):
        call = tool_call("http_request", {"url": tool_server.url("/x", host="tools.test")})
        result = await run_activity(tools.http_request, call)
        assert result.content == 'HTTP 200\n{"ok": true}'
    assert resolver.lookups == [("tools.test", tool_server.port)] * 2  # one per call
    assert [r.headers["host"] for r in tool_server.requests()] == [
        f"tools.test:{tool_server.port}"
    ] * 2


async def test_dns_rebinding_cannot_move_a_custom_tool_to_a_private_address(
    tls_tool_server: ToolServer, certificate: Certificate,
) -> None:
    # The name passes the check with a public address, then "rebinds" to loopback.
    resolver = CountingResolver([PUBLIC], ["127.0.0.1"])
    backend = RoutedBackend({PUBLIC: "127.0.0.1"})
    client = tool_http_client(verify=certificate.client_context(), network_backend=backend)
    tools = HttpTools(client, (), resolver=resolver)
    url = tls_tool_server.url("/crm", host="tools.test")
    result = await run_activity(tools.custom_tool,
                                tool_call("crm_update", {"contact": "bob"}, url=url))

    assert result.content == '{"ok": true}', result.content
    assert resolver.lookups == [("tools.test", tls_tool_server.port)]
    assert backend.connects == [(PUBLIC, tls_tool_server.port)]
    # Over https with the name: SNI and Host say tools.test, its certificate was checked.
    assert tls_tool_server.server_names() == ["tools.test"]
    (request,) = tls_tool_server.requests()
    assert request.headers["host"] == f"tools.test:{tls_tool_server.port}"
    assert (request.path, request.body) == ("/crm", {"contact": "bob"})
    assert request.headers["idempotency-key"] == "ckruntest:0:0:0"


async def test_the_tool_client_never_connects_to_an_unchecked_host(
    tool_server: ToolServer,
) -> None:
    backend = RoutedBackend()
    async with tool_http_client(network_backend=backend) as client:
        with pytest.raises(httpx.ConnectError, match="no checked address"):
            await client.get(tool_server.url())
    assert backend.connects == []
    assert tool_server.requests() == []


async def test_custom_tools_use_https_unless_the_host_is_allowlisted(
    tool_server: ToolServer,
) -> None:
    url = tool_server.url("/crm", host="tools.test")
    backend = RoutedBackend({PUBLIC: "127.0.0.1"})
    refused = HttpTools(tool_http_client(network_backend=backend), (),
                        resolver=CountingResolver([PUBLIC]))
    result = await run_activity(refused.custom_tool,
                                tool_call("crm_update", {"contact": "bob"}, url=url))
    assert result.is_error
    assert "https" in result.content and "LOOPLLAMA_HTTP_ALLOWLIST" in result.content
    assert backend.connects == [] and tool_server.requests() == []

    allowed = HttpTools(tool_http_client(network_backend=backend), ("tools.test",),
                        resolver=CountingResolver(["127.0.0.1"]))
    result = await run_activity(allowed.custom_tool,
                                tool_call("crm_update", {"contact": "bob"}, url=url))
    assert result.content == '{"ok": true}', result.content
    assert backend.connects == [("127.0.0.1", tool_server.port)]
    assert len(tool_server.requests()) == 1


# ---------------------------------------------------------------------- HTTP: timeouts


async def test_a_tool_that_does_not_answer_times_out_as_a_timeout(
    tool_server: ToolServer,
) -> None:
    tools = HttpTools(tool_http_client(), ("127.0.0.1",), timeout_seconds=0.5)
    for call in (tool_call("crm_update", {"contact": "bob"}, url=tool_server.url("/crm")),
                 tool_call("http_request", {"url": tool_server.url("/slow")})):
        tool_server.stall_next()
        method = tools.custom_tool if call.custom else tools.http_request
        with pytest.raises(ApplicationError) as caught:
            await run_activity(method, call)
        assert caught.value.type == TOOL_TIMEOUT
        assert "timed out after 0.5 s" in caught.value.message
        # The receiver may be acting on it: the agent decides, no blind retry.
        assert caught.value.non_retryable
    assert len(tool_server.requests()) == 2


async def test_a_host_that_does_not_accept_the_connection_times_out_connecting() -> None:
    backend = RoutedBackend(hang=True)
    tools = HttpTools(tool_http_client(network_backend=backend), (),
                      resolver=CountingResolver([PUBLIC]), connect_timeout_seconds=0.3)
    call = tool_call("crm_update", {"contact": "bob"}, url="https://tools.test/crm")
    with pytest.raises(ApplicationError) as caught:
        await run_activity(tools.custom_tool, call)
    assert caught.value.type == TOOL_TIMEOUT
    assert "timed out after 0.3 s connecting" in caught.value.message
    assert not caught.value.non_retryable  # nothing was sent: trying again is safe
    assert backend.connects == [(PUBLIC, 443)]
