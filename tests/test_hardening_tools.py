"""Tool inputs and destinations from the adversarial pass (issue 20), in the real stack.

Email and `http_request` input the tools would refuse is refused before anyone is asked
to approve it: the run never pauses for it, the model gets an error result naming the
problem, and nothing is sent. Webhooks and custom tools refuse every IPv6 form that
carries an IPv4 address the address policy refuses, when they are declared (the API)
and when they are called (the activities, for definitions stored before the rule).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.http_tools import HttpTools, tool_http_client
from activities.webhooks import WEBHOOK_REJECTED, WebhookSender
from core.settings import Secret, Settings
from core.types import CustomToolConfig, ToolCall, WebhookDelivery
from tests.conftest import WEBHOOK_KEY, crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.tool_server import ToolServer
from tests.helpers import create_workflow, get_run, trigger, wait_for_status
from worker import build_worker

EMAIL = {"to": "bob@example.com", "subject": "Launch day", "body": "We launch on Monday."}
# Each input the email tool would refuse, and what the model is told about it.
BAD_EMAILS: list[tuple[dict[str, str], str]] = [
    ({**EMAIL, "to": "bob@example.com,eve"}, "to: contains ','"),
    ({**EMAIL, "to": "bob@example.com, eve@example.com"}, "to: contains ','"),
    ({**EMAIL, "to": "bob@example.com;eve@example.com"}, "to: contains ';'"),
    ({**EMAIL, "to": "Bob <bob@example.com>"}, "to: contains ' '"),
    ({**EMAIL, "to": "<bob@example.com>"}, "to: contains '<'"),
    ({**EMAIL, "to": '"bob"@example.com'}, "to: contains '\"'"),
    ({**EMAIL, "to": "bob@example.com\n"}, "to: contains a line break (U+000A)"),
    ({**EMAIL, "to": "bob\x00@example.com"}, "to: contains a control character (U+0000)"),
    ({**EMAIL, "to": "bob@@example.com"}, "to: has 2 @ signs"),
    ({**EMAIL, "subject": "Launch day\n"}, "subject: contains a line break (U+000A)"),
    ({**EMAIL, "subject": "Launch day\r"}, "subject: contains a line break (U+000D)"),
    ({**EMAIL, "subject": "Launch\x00day"}, "subject: contains a control character (U+0000)"),
    ({**EMAIL, "subject": "Launch\x7fday"}, "subject: contains a control character (U+007F)"),
    ({**EMAIL, "subject": "Launch\x85day"}, "subject: contains a line break (U+0085)"),
    ({**EMAIL, "subject": "Launch\u2028Bcc: eve@example.com"},
     "subject: contains a line break (U+2028)"),
    ({**EMAIL, "subject": "Launch\u2029day"}, "subject: contains a line break (U+2029)"),
    ({**EMAIL, "subject": "Launch \u202eyad"},
     "subject: contains a bidirectional control character (U+202E)"),
    ({**EMAIL, "body": "We launch\x00 on Monday."}, "body: contains a NUL character"),
]
REQUEST = {"method": "POST", "body": "{}"}
# Each `http_request` input the tool would refuse (before the allow-list), and the problem.
BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"headers": {"X-Note": "hi\n"}}, "header 'X-Note' contains a line break (U+000A)"),
    ({"headers": {"X-Note": "a\r\nX-Injected: 1"}}, "contains a line break (U+000D)"),
    ({"headers": {"X-Note": "a\x00b"}}, "contains a control character (U+0000)"),
    ({"headers": {"X-Note": "caf\u00e9"}}, "the non-ASCII character 'é'"),
    ({"headers": {"X-Note\n": "hi"}}, "'X-Note\\n' is not a valid header name"),
    ({"headers": {"Bad Name": "hi"}}, "'Bad Name' is not a valid header name"),
    ({"url_userinfo": True}, "url: carries a user name or password"),
    # httpx would percent-encode it, but the approver reads the URL as written.
    ({"url_suffix": "/\u202etxt.exe"}, "url: contains a bidirectional control character"),
    ({"url_suffix": "/a\x00b"}, "url: contains a control character (U+0000)"),
]
# Addresses the policy refuses, and one it allows (PUBLIC), to embed in IPv6 forms.
REFUSED_IPV4 = ("127.0.0.1", "10.0.0.1", "169.254.169.254", "192.168.1.1", "100.64.0.1")
PUBLIC = "93.184.215.14"


def ipv6_forms(v4: str) -> dict[str, str]:
    """Every IPv6 spelling that carries `v4`, by name."""
    a = int(ipaddress.IPv4Address(v4))
    public = int(ipaddress.IPv4Address(PUBLIC))

    def v6(value: int) -> str:
        return str(ipaddress.IPv6Address(value))

    return {
        "IPv4-mapped": f"::ffff:{v4}",
        "IPv4-mapped, hex": v6(0xFFFF << 32 | a),
        "IPv4-compatible": f"::{v4}",
        "IPv4-translated": f"::ffff:0:{v4}",
        "NAT64": f"64:ff9b::{v4}",
        "NAT64 local-use": f"64:ff9b:1::{v4}",
        "6to4": v6(0x2002 << 112 | a << 80 | 1),
        "Teredo server": v6(0x2001 << 112 | a << 64 | (~public & 0xFFFF_FFFF)),
        "Teredo client": v6(0x2001 << 112 | public << 64 | (~a & 0xFFFF_FFFF)),
        "ISATAP": v6(0x2606_4700 << 96 | 0x200_5EFE << 32 | a),
    }


def every_refused_form() -> Iterator[tuple[str, str, str]]:
    """(embedded IPv4, form name, IPv6 address) for every refused IPv4 and form."""
    for v4 in REFUSED_IPV4:
        for name, address in ipv6_forms(v4).items():
            yield v4, name, address


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def tool_worker(temporal: Client, settings: Settings, smtp: FakeSmtp
                      ) -> AsyncIterator[Worker]:
    """A worker with real SMTP (the fake) and 127.0.0.1 on the allow-list."""
    own = replace(settings, smtp_url=Secret(smtp.url), smtp_from="crew@example.com",
                  http_allowlist=("127.0.0.1",))
    async with build_worker(temporal, own) as running:
        yield running


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every connection attempt and makes none."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self, host: str, port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        raise httpcore.ConnectError("this test makes no connections")


# ---------------------------------------------------------------------------- helpers


def tool_uses(calls: list[tuple[str, dict[str, Any]]],
              when: Callable[[dict[str, Any]], bool]) -> Reply:
    """One model reply calling every tool in `calls` at once."""
    tag = unique_tag()
    return Reply(
        content=[{"type": "tool_use", "id": f"toolu_{tag}{n}", "name": name, "input": args}
                 for n, (name, args) in enumerate(calls)],
        stop_reason="tool_use", when=when,
    )


def answer_to(fake: FakeAnthropic, tool_use_id: str) -> dict[str, Any]:
    """The one tool_result the model got for `tool_use_id`."""
    found = [block for request in fake.requests for block in request.tool_results
             if block["tool_use_id"] == tool_use_id]
    assert len(found) == 1, found
    return found[0]


async def scheduled_activities(temporal: Client, run_id: str) -> list[str]:
    history = await temporal.get_workflow_handle(run_id).fetch_history()
    return [event.activity_task_scheduled_event_attributes.activity_type.name
            for event in history.events
            if event.HasField("activity_task_scheduled_event_attributes")]


async def gated_run(api: httpx.AsyncClient, fake: FakeAnthropic, tool: str,
                    calls: list[tuple[str, dict[str, Any]]], **fields: Any
                    ) -> tuple[str, Reply]:
    """A one-agent run whose agent makes `calls` in one round, with `tool` gated by
    approval, then says "Done."."""
    tag = unique_tag()
    agent = for_role(tag, "agent")
    reply = fake.enqueue(tool_uses(calls, agent))
    fake.reply_text("Done.", when=agent)
    workflow = await create_workflow(
        api, crew("agent", tag=tag, tools=[tool]),
        human_in_the_loop={"approval_required_tools": [tool]}, **fields,
    )
    return str((await trigger(api, workflow["id"], "Go."))["id"]), reply


# --------------------------------------------------------------- email: before approval


async def test_email_input_the_tool_would_refuse_never_reaches_an_approver(
    api: httpx.AsyncClient, temporal: Client, tool_worker: Worker,
    fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
) -> None:
    run_id, reply = await gated_run(api, fake_anthropic, "send_email",
                                    [("send_email", email) for email, _ in BAD_EMAILS])
    # Every call is gated, so one that reached the gate would hold the run at
    # waiting_input until someone answered; it completes without anyone answering.
    run = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    try:
        assert run["status"] == "completed", (run["pending"], run["error"])
        for block, (email, problem) in zip(reply.content, BAD_EMAILS, strict=True):
            result = answer_to(fake_anthropic, block["id"])
            assert result["is_error"] is True, (email, result)
            assert result["content"].startswith("Invalid input for send_email: "), result
            assert problem in result["content"], (email, result["content"])
            assert "Nothing was run" in result["content"]
        assert smtp.connections == 0 and smtp.messages() == []
        assert "send_email" not in await scheduled_activities(temporal, run_id)
    finally:
        if (await get_run(api, run_id))["status"] == "waiting_input":
            await temporal.get_workflow_handle(run_id).terminate("test cleanup")


async def test_beside_bad_email_input_only_the_good_email_is_asked_for_and_sent(
    api: httpx.AsyncClient, temporal: Client, tool_worker: Worker,
    fake_anthropic: FakeAnthropic, smtp: FakeSmtp,
) -> None:
    good = {**EMAIL, "to": "o'brien+launch@mail.example.co.uk"}
    calls = [("send_email", {**EMAIL, "to": "bob@example.com,eve@example.com"}),
             ("send_email", good),
             ("send_email", {**EMAIL, "subject": "Launch day\n"})]
    run_id, reply = await gated_run(api, fake_anthropic, "send_email", calls)
    paused = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    assert paused["status"] == "waiting_input", paused["error"]
    assert paused["pending"]["tool_input"] == good
    response = await api.post(f"/v1/runs/{run_id}/respond", json={"action": "approve"})
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, run_id, "completed", "failed")
    # One answer, and the run completed: it paused once, for the good email only.
    assert done["status"] == "completed", done["error"]

    (mail,) = smtp.messages()
    assert mail.recipients == [good["to"]]
    assert mail.message.get_all("To") == [good["to"]]
    assert mail.message.get_all("Cc") is None and mail.message.get_all("Bcc") is None
    first, sent, last = (answer_to(fake_anthropic, b["id"]) for b in reply.content)
    assert first["is_error"] and "to: contains ','" in first["content"]
    assert not sent["is_error"] and good["to"] in sent["content"]
    assert last["is_error"] and "subject: contains a line break" in last["content"]
    assert (await scheduled_activities(temporal, run_id)).count("send_email") == 1


# ----------------------------------------------------------- http_request: before approval


async def test_http_request_input_the_tool_would_refuse_never_reaches_an_approver(
    api: httpx.AsyncClient, temporal: Client, tool_worker: Worker,
    fake_anthropic: FakeAnthropic, tool_server: ToolServer,
) -> None:
    inputs = []
    for bad, _ in BAD_REQUESTS:
        fields = dict(bad)
        url = tool_server.url("/hook")
        if fields.pop("url_userinfo", False):
            url = url.replace("://", "://user:secret@")
        url += fields.pop("url_suffix", "")
        inputs.append({**REQUEST, "url": url, **fields})
    run_id, reply = await gated_run(api, fake_anthropic, "http_request",
                                    [("http_request", one) for one in inputs])
    run = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    try:
        assert run["status"] == "completed", (run["pending"], run["error"])
        for block, (_, problem) in zip(reply.content, BAD_REQUESTS, strict=True):
            result = answer_to(fake_anthropic, block["id"])
            assert result["is_error"] is True, result
            assert result["content"].startswith("Invalid input for http_request: "), result
            assert problem in result["content"], result["content"]
        assert tool_server.requests() == []
        assert "http_request" not in await scheduled_activities(temporal, run_id)
    finally:
        if (await get_run(api, run_id))["status"] == "waiting_input":
            await temporal.get_workflow_handle(run_id).terminate("test cleanup")


# ----------------------------------- what the worker's configuration refuses: before approval


async def test_a_request_off_the_allow_list_never_reaches_an_approver(
    api: httpx.AsyncClient, temporal: Client, tool_worker: Worker,
    fake_anthropic: FakeAnthropic, tool_server: ToolServer,
) -> None:
    allowed = {**REQUEST, "url": tool_server.url("/hook")}
    refused = {**REQUEST, "url": "https://api.example.com/hook"}
    run_id, reply = await gated_run(api, fake_anthropic, "http_request",
                                    [("http_request", refused), ("http_request", allowed)])
    paused = await wait_for_status(api, run_id, "waiting_input", "completed", "failed")
    assert paused["status"] == "waiting_input", paused["error"]
    # Only the call the tool would make is asked about.
    assert [p["tool_input"] for p in paused["pauses"]] == [allowed]
    response = await api.post(f"/v1/runs/{run_id}/respond", json={"action": "approve"})
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    first, sent = (answer_to(fake_anthropic, b["id"]) for b in reply.content)
    assert first["is_error"] and first["content"] == (
        "Request refused: host 'api.example.com' is not in the worker's "
        "LOOPLLAMA_HTTP_ALLOWLIST.")
    assert not sent["is_error"] and len(tool_server.requests()) == 1
    scheduled = await scheduled_activities(temporal, run_id)
    assert scheduled.count("tool_check") == 2 and scheduled.count("http_request") == 1


# ------------------------------------------------------- address policy: when declared


async def test_webhooks_and_custom_tools_to_ipv6_forms_of_refused_ipv4_are_refused(
    api: httpx.AsyncClient,
) -> None:
    for v4, form, address in every_refused_form():
        url = f"https://[{address}]:8443/hook"
        for body in (
            {"webhooks": [{"url": url, "events": ["run.completed"]}]},
            {"tools": [{"name": "crm_update", "description": "Update the CRM.",
                        "input_schema": {"type": "object"}, "url": url}]},
        ):
            response = await api.post("/v1/workflows", json={
                "name": "x", "crew": crew("a", model="loopllama-offline"), **body})
            assert response.status_code == 400, (form, address, response.text)
            message = response.json()["error"]["message"]
            assert "non-public" in message and v4 in message, (form, address, message)


async def test_an_ipv6_form_of_a_public_ipv4_is_declared_like_the_ipv4(
    api: httpx.AsyncClient,
) -> None:
    for address in (f"::ffff:{PUBLIC}", f"64:ff9b::{PUBLIC}"):
        await create_workflow(api, crew("a", model="loopllama-offline"), webhooks=[
            {"url": f"https://[{address}]/hook", "events": ["run.completed"]}])


# -------------------------------------------------------- address policy: when called


async def test_a_webhook_to_an_ipv6_form_of_a_refused_ipv4_is_never_delivered() -> None:
    backend = RecordingBackend()
    sender = WebhookSender(tool_http_client(network_backend=backend), ("127.0.0.1",),
                           Secret(WEBHOOK_KEY))
    for v4, form, address in every_refused_form():
        delivery = WebhookDelivery(
            message_id="msg_1", url=f"https://[{address}]/hook", workflow_id="ckwftest",
            type="run.completed", timestamp=datetime.now(UTC), data={},
        )
        with pytest.raises(ApplicationError) as caught:
            await ActivityEnvironment().run(sender.deliver, delivery)
        assert caught.value.type == WEBHOOK_REJECTED and caught.value.non_retryable
        assert "non-public" in caught.value.message and v4 in caught.value.message, (
            form, caught.value.message)
    assert backend.connects == []


async def test_a_custom_tool_at_an_ipv6_form_of_a_refused_ipv4_is_never_called() -> None:
    # Even with 127.0.0.1 allow-listed: the allow-list names hosts, and these are others.
    backend = RecordingBackend()
    tools = HttpTools(tool_http_client(network_backend=backend), ("127.0.0.1",))
    for v4, form, address in every_refused_form():
        url = f"https://[{address}]/crm"
        custom = CustomToolConfig(name="crm_update", description="Update the CRM.",
                                  input_schema={"type": "object"}, url=url)
        call = ToolCall(run_id="ckruntest", tool_use_id="toolu_1", name="crm_update",
                        input={}, custom=custom, step=0, round=0, position=0)
        result = await ActivityEnvironment().run(tools.custom_tool, call)
        assert result.is_error, (form, result.content)
        assert "non-public" in result.content and v4 in result.content, (form, result.content)
    assert backend.connects == []
