"""Before a person is asked to approve a tool call: would the tool refuse it anyway?

The run checks a call's input itself (core/tools.py). What depends on the worker's
configuration and the network (the allow-list, the addresses a host resolves to, whether
a mail server is configured) only an activity can check; asking it first means nobody
approves a call that was never going to run. The tool checks again when it runs.
"""

from __future__ import annotations

from temporalio import activity

from activities.email_tool import EmailTool
from activities.http_tools import HttpTools
from core.contract import HTTP_REQUEST, SEND_EMAIL, TOOL_CHECK
from core.types import ToolCall, ToolCheck


class ToolChecks:
    """The refusals of the worker's own tools, asked without acting."""

    def __init__(self, http: HttpTools, email: EmailTool) -> None:
        self._http = http
        self._email = email

    @activity.defn(name=TOOL_CHECK)
    async def check(self, call: ToolCall) -> ToolCheck:
        """What the tool would answer `call` without acting, if it would refuse it."""
        if call.name == SEND_EMAIL:
            return ToolCheck(refusal=self._email.refusal(call))
        if call.name == HTTP_REQUEST or call.custom is not None:
            return ToolCheck(refusal=await self._http.refusal(call))
        return ToolCheck()
