"""How every LoopLlama process logs: set up once, in `configure_logging`.

`LOOPLLAMA_LOG_FORMAT=text` (the default) keeps the plain `time LEVEL logger: message`
lines; `json` writes one JSON object per line for log collectors, with the Temporal
context of the line as fields of their own:

    {"timestamp": "2025-06-01T12:00:00.123Z", "level": "WARNING", "logger":
     "temporalio.activity", "message": "anthropic_messages failed (attempt 2): ...",
     "run_id": "ckrun...", "workflow_id": "ckrun...", "workflow_type": "CrewRun",
     "activity_type": "anthropic_messages", "activity_id": "3", "attempt": 2}

The Temporal SDK's workflow and activity loggers put that context in each record's
`temporal_workflow` / `temporal_activity` extras; the JSON formatter lifts it into
fields (and the SDK then stops appending it to the message). `step` (1-based, as in
"Step 2 (writer) failed") comes from the tool call an activity runs, through the
`StepContext` worker interceptor.

What never appears: a configured secret (API keys, the Anthropic key, the SMTP URL and
its password, the webhook key), or anything shaped like a credential (`Bearer …`,
`sk-…`, `x-api-key: …`; core/redaction.py), is replaced by `[redacted]` in every line,
in both formats. Prompts and outputs appear only with `LOOPLLAMA_LOG_LEVEL=debug`: nothing
LoopLlama logs at `info` carries them, and the libraries that would (the Temporal SDK
dumping workflow activations, the Anthropic client dumping requests, httpx) log them
only at debug.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow
from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core.ids import RUN_PREFIX, looks_like
from core.redaction import REDACTED, redact, secret_values
from core.settings import Settings

__all__ = [
    "CORE_LOGGER", "REDACTED", "TEXT_FORMAT", "JsonFormatter", "StepContext", "TextFormatter",
    "configure_logging", "core_logging", "loopllama_run_id", "redact", "secret_values",
    "temporal_fields",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Chatty at info (one line per HTTP request or SMTP command); shown at debug only.
_QUIET_BELOW_DEBUG = ("httpx", "httpx2", "httpcore", "mail.log")
# Where the Temporal Core (Rust) logs go when forwarded into Python logging.
CORE_LOGGER = "temporalio.core"

# The step (1-based) of the tool call the current activity runs, if it is one.
_step: contextvars.ContextVar[int | None] = contextvars.ContextVar("loopllama_step", default=None)


def configure_logging(settings: Settings) -> None:
    """Set up the root logger for this process from `settings` (format, level, secrets)."""
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    handler = logging.StreamHandler(sys.stderr)
    secrets = secret_values(settings)
    handler.setFormatter(
        JsonFormatter(secrets) if settings.log_format == "json" else TextFormatter(secrets)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG
                                         else logging.WARNING)
    # In JSON the context is a field of its own; appended to the message it would repeat.
    in_message = settings.log_format != "json"
    activity.logger.activity_info_on_message = in_message
    workflow.logger.workflow_info_on_message = in_message


def core_logging(settings: Settings) -> LoggingConfig | None:
    """How the Temporal Core (Rust) logs in this process, for its SDK `Runtime`.

    None keeps the SDK's default (its own plain lines on stderr). In JSON mode Core's
    lines are forwarded into Python logging, so they come out as JSON like the rest.
    """
    if settings.log_format != "json":
        return None
    core_level = "INFO" if settings.log_level == "debug" else "WARN"
    return LoggingConfig(
        filter=TelemetryFilter(core_level=core_level, other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
    )


class TextFormatter(logging.Formatter):
    """Today's plain lines, with secrets redacted."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(TEXT_FORMAT)
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        """The plain line."""
        return redact(super().format(record), self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(temporal_fields(record.__dict__))
        step = _step.get()
        if step is not None:
            entry["step"] = step
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        if self._secrets:
            entry = {key: redact(value, self._secrets) if isinstance(value, str) else value
                     for key, value in entry.items()}
        return json.dumps(entry, ensure_ascii=False, default=str)


def temporal_fields(extras: Mapping[str, Any]) -> dict[str, Any]:
    """Run id, workflow and activity fields from the SDK's logging extras."""
    fields: dict[str, Any] = {}
    workflow_info = extras.get("temporal_workflow")
    if isinstance(workflow_info, Mapping):
        fields["workflow_id"] = workflow_info.get("workflow_id")
        fields["workflow_type"] = workflow_info.get("workflow_type")
        fields["temporal_run_id"] = workflow_info.get("run_id")
        if "update_name" in workflow_info:
            fields["update_name"] = workflow_info["update_name"]
    activity_info = extras.get("temporal_activity")
    if isinstance(activity_info, Mapping):
        fields["workflow_id"] = activity_info.get("workflow_id")
        fields["workflow_type"] = activity_info.get("workflow_type")
        fields["temporal_run_id"] = activity_info.get("workflow_run_id")
        fields["activity_type"] = activity_info.get("activity_type")
        fields["activity_id"] = activity_info.get("activity_id")
        fields["attempt"] = activity_info.get("attempt")
    run_id = loopllama_run_id(fields.get("workflow_id"))
    if run_id is not None:
        fields = {"run_id": run_id, **fields}
    return {key: value for key, value in fields.items() if value is not None}


def loopllama_run_id(workflow_id: object) -> str | None:
    """The run a Temporal workflow id belongs to: the run's own execution (`ckrun…`) or
    one of its webhook deliveries (`ckrun…-msg_…`); None for anything else."""
    if not isinstance(workflow_id, str):
        return None
    head = workflow_id.split("-", 1)[0]
    return head if looks_like(RUN_PREFIX, head) else None


class StepContext(Interceptor):
    """Worker interceptor: log lines of a tool-call activity carry its step."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap every activity."""
        return _WithStep(next)


class _WithStep(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        step = getattr(input.args[0], "step", None) if input.args else None
        token = _step.set(step + 1 if isinstance(step, int) else None)
        try:
            return await super().execute_activity(input)
        finally:
            _step.reset(token)
