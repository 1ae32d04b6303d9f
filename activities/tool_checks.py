"""Before a person is asked to approve a tool call: would the tool refuse it anyway?

The run checks a call's input itself (core/tools.py). Whether its destination is allowed
depends on the worker's allow-list and on the addresses the host resolves to, which only
an activity can check; asking it first means nobody approves a request that was never
going to be sent. The tool checks again when it runs (DNS may change in between).

A worker without a mail server still asks about emails: that is the deployment's state,
not the call's, and the approver learns of it from the tool's answer.
"""

from __future__ import annotations

from temporalio import activity

from activities.http_tools import HttpTools
from core.contract import TOOL_CHECK
from core.types import ToolCall, ToolCheck


class ToolChecks:
    """The refusals of the worker's HTTP tools, asked without sending anything."""

    def __init__(self, http: HttpTools) -> None:
        self._http = http

    @activity.defn(name=TOOL_CHECK)
    async def check(self, call: ToolCall) -> ToolCheck:
        """What the tool would answer `call` without acting, if it would refuse it."""
        if call.sends_http:
            return ToolCheck(refusal=await self._http.refusal(call))
        return ToolCheck()
