"""Logs: `LOOPLLAMA_LOG_FORMAT=json` gives one JSON object per line, with the run, step and
activity attempt where they apply, and never a secret or a prompt.

The formatter is checked on records shaped like the Temporal SDK's; then real `loopllama
worker` and `loopllama api` processes are run with JSON logs and every line they write
is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import activity
from temporalio.worker import ExecuteActivityInput

from core.devserver import DevServer
from core.logs import (
    REDACTED,
    TEXT_FORMAT,
    JsonFormatter,
    StepContext,
    TextFormatter,
    configure_logging,
    secret_values,
)
from core.settings import Secret, Settings, SettingsError
from core.types import ToolCall
from tests.conftest import (
    API_KEY,
    WEBHOOK_KEY,
    crew,
    eventually,
    for_role,
    free_port,
    unique_tag,
    worker_process_env,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, reaped, trigger

RUN_ID = "ckrun" + "a" * 21
FIELDS = {"timestamp", "level", "logger", "message"}


def record(message: str, *, level: int = logging.INFO, exc: bool = False,
           **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("temporalio.activity", level, __file__, 1, message, None,
                             None)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            made.exc_info = sys.exc_info()
    made.__dict__.update(extra)
    return made


ACTIVITY = {
    "activity_id": "3", "activity_type": "model_call", "attempt": 2,
    "namespace": "default", "task_queue": "loopllama", "workflow_id": RUN_ID,
    "workflow_run_id": "0198-uuid", "workflow_type": "CrewRun",
}


# --------------------------------------------------------------------------- settings


def test_log_settings_parse_and_refuse_with_a_clear_message() -> None:
    default = Settings.from_env({})
    assert (default.log_format, default.log_level) == ("text", "info")
    chosen = Settings.from_env({"LOOPLLAMA_LOG_FORMAT": "JSON", "LOOPLLAMA_LOG_LEVEL": "Debug"})
    assert (chosen.log_format, chosen.log_level) == ("json", "debug")
    with pytest.raises(SettingsError, match="LOOPLLAMA_LOG_FORMAT must be one of text, json"):
        Settings.from_env({"LOOPLLAMA_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="LOOPLLAMA_LOG_LEVEL must be one of debug"):
        Settings.from_env({"LOOPLLAMA_LOG_LEVEL": "verbose"})


def test_worker_metrics_settings() -> None:
    assert Settings.from_env({}).worker_metrics_address is None
    port = Settings.from_env({"LOOPLLAMA_WORKER_METRICS_PORT": "9464"})
    assert port.worker_metrics_address == "127.0.0.1:9464"
    anywhere = Settings.from_env({"LOOPLLAMA_WORKER_METRICS_PORT": "9464",
                                  "LOOPLLAMA_WORKER_METRICS_HOST": "::"})
    assert anywhere.worker_metrics_address == "[::]:9464"
    for bad in ("0", "65536", "http", "-1"):
        with pytest.raises(SettingsError, match="LOOPLLAMA_WORKER_METRICS_PORT must be a port"):
            Settings.from_env({"LOOPLLAMA_WORKER_METRICS_PORT": bad})
    with pytest.raises(SettingsError, match="needs LOOPLLAMA_WORKER_METRICS_PORT"):
        Settings.from_env({"LOOPLLAMA_WORKER_METRICS_HOST": "0.0.0.0"})
    with pytest.raises(SettingsError, match="LOOPLLAMA_WORKER_METRICS_HOST must be a host"):
        Settings.from_env({"LOOPLLAMA_WORKER_METRICS_PORT": "9464",
                           "LOOPLLAMA_WORKER_METRICS_HOST": "http://x/"})


# --------------------------------------------------------------------------- formatting


def test_json_line_lifts_the_sdk_context_into_fields() -> None:
    line = JsonFormatter().format(record("anthropic_messages failed (attempt 2): 429",
                                         level=logging.WARNING, temporal_activity=ACTIVITY))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "WARNING" and entry["logger"] == "temporalio.activity"
    assert entry["message"] == "anthropic_messages failed (attempt 2): 429"
    assert entry["timestamp"].endswith("Z") and "T" in entry["timestamp"]
    assert entry["run_id"] == RUN_ID == entry["workflow_id"]
    assert entry["activity_type"] == "model_call"
    assert entry["attempt"] == 2 and entry["activity_id"] == "3"
    assert entry["temporal_run_id"] == "0198-uuid"


def test_json_line_for_workflows_webhooks_and_plain_records() -> None:
    workflow = {"attempt": 1, "namespace": "default", "run_id": "0198", "task_queue": "q",
                "workflow_id": f"{RUN_ID}-msg_0a1b", "workflow_type": "WebhookDelivery"}
    entry = json.loads(JsonFormatter().format(record("x", temporal_workflow=workflow)))
    assert entry["run_id"] == RUN_ID
    assert entry["workflow_type"] == "WebhookDelivery"
    definition = {**workflow, "workflow_id": "ckva" + "b" * 21,
                  "workflow_type": "CrewDefinition"}
    entry = json.loads(JsonFormatter().format(record("x", temporal_workflow=definition)))
    assert "run_id" not in entry and entry["workflow_type"] == "CrewDefinition"
    plain = json.loads(JsonFormatter().format(record("plain", exc=True)))
    assert set(plain) == FIELDS | {"exception"}
    assert "ValueError: boom" in plain["exception"]


def test_secrets_are_redacted_in_both_formats() -> None:
    settings = Settings(
        api_keys=(Secret("api-key-0123456789"),), anthropic_api_key=Secret("sk-ant-0123456789"),
        smtp_url=Secret("smtp://mailer:pa55word-xyz@mail.example:587"),
        webhook_key=Secret(WEBHOOK_KEY),
    )
    secrets = secret_values(settings)
    assert "pa55word-xyz" in secrets
    leaky = record("key api-key-0123456789 and sk-ant-0123456789 via "
                   "smtp://mailer:pa55word-xyz@mail.example:587 and pa55word-xyz")
    for formatter in (JsonFormatter(secrets), TextFormatter(secrets)):
        line = formatter.format(leaky)
        for secret in secrets:
            assert secret not in line
        assert REDACTED in line
        assert line.count(REDACTED) == 4 and "key " in line


def test_text_format_stays_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    root, quiet = logging.getLogger(), logging.getLogger("httpx")
    saved = (root.handlers[:], root.level, quiet.level)
    try:
        configure_logging(Settings())
        formatter = root.handlers[0].formatter
        assert isinstance(formatter, TextFormatter) and formatter._fmt == TEXT_FORMAT
        assert quiet.level == logging.WARNING
        assert activity.logger.activity_info_on_message  # the context stays in the text
        logging.getLogger("loopllama.test").info("hello")
        assert capsys.readouterr().err.rstrip().endswith("INFO loopllama.test: hello")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        quiet.setLevel(saved[2])


async def test_tool_call_lines_carry_their_step() -> None:
    lines: list[str] = []

    class Next:
        async def execute_activity(self, input: ExecuteActivityInput) -> str:
            lines.append(JsonFormatter().format(record("inside", temporal_activity=ACTIVITY)))
            return "done"

    call = ToolCall(run_id=RUN_ID, tool_use_id="t1", name="send_email", input={}, step=1,
                    round=0, position=0)
    intercept = StepContext().intercept_activity(Next())  # type: ignore[arg-type]
    given: Any = type("Input", (), {"args": [call]})()
    assert await intercept.execute_activity(given) == "done"
    assert json.loads(lines[0])["step"] == 2  # 1-based, as in "Step 2 (writer) failed"
    assert "step" not in json.loads(JsonFormatter().format(record("after")))


# --------------------------------------------------------------------------- processes


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a process's output, each of which must be one JSON object."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(entry, dict) and FIELDS <= set(entry), line
        entries.append(entry)
    return entries


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    with reaped(processes):
        yield processes


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
        )


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(process.wait, 30)


async def test_worker_writes_json_lines_with_run_step_and_attempt_and_no_secrets(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic,
    tmp_path: Path, children: list[subprocess.Popen[bytes]],
) -> None:
    env = worker_process_env(settings)
    env.update(LOOPLLAMA_LOG_FORMAT="json", LOOPLLAMA_HTTP_ALLOWLIST="127.0.0.1")
    log = tmp_path / "worker.log"
    children.append(start(["worker"], env, log))

    tag = unique_tag()
    prompt = f"SECRET-PROMPT-{tag}"
    # A model call that meets a rate limit once (a warning on attempt 1), then passes.
    fake_anthropic.reply_error(429, message="slow down", when=for_role(tag, "writer"))
    writer = await create_workflow(api, crew("writer", tag=tag))
    run = await trigger(api, writer["id"], f"Write about {prompt}.")
    # A tool call that cannot connect (a warning, retried): its lines carry the step.
    closed = free_port()
    fetcher = await create_workflow(api, crew("fetcher", model="loopllama-offline",
                                              tag=tag, tools=["http_request"]))
    fetching = await trigger(api, fetcher["id"],
                             f"Fetch http://127.0.0.1:{closed}/status about {prompt}.")

    def warned(activity_type: str, run_id: str) -> dict[str, Any] | None:
        for entry in json_lines(log.read_text()):
            if entry.get("activity_type") == activity_type and entry.get("run_id") == run_id:
                return entry
        return None

    async def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
        model = warned("model_call", run["id"])
        tool = warned("http_request", fetching["id"])
        return (model, tool) if model and tool else None

    model, tool = await eventually(both, within=60, interval=0.2)
    await stop(children[0])

    assert model["level"] == "WARNING" and model["attempt"] == 1
    assert model["workflow_id"] == run["id"] and model["workflow_type"] == "CrewRun"
    assert "429" in model["message"] and "(" + "{" not in model["message"]
    assert tool["step"] == 1 and tool["attempt"] >= 1
    text = log.read_text()
    entries = json_lines(text)
    assert any("polling task queue" in entry["message"] for entry in entries)
    assert any(entry["message"] == "LoopLlama worker stopped." for entry in entries)
    for secret in (prompt, "You are the writer", "sk-ant-test", WEBHOOK_KEY):
        assert secret not in text, secret


async def test_api_writes_json_lines_and_never_its_key(
    dev_server: DevServer, tmp_path: Path, children: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    env = worker_process_env(Settings(temporal_address=dev_server.address,
                                      data_dir=tmp_path))
    env.update(LOOPLLAMA_LOG_FORMAT="json", LOOPLLAMA_API_KEY=API_KEY)
    log = tmp_path / "api.log"
    children.append(start(["api", "--host", "127.0.0.1", "--port", str(port)], env, log))

    async def serving() -> bool:
        return any("LoopLlama API on" in entry["message"]
                   for entry in json_lines(log.read_text()))

    await eventually(serving, within=60, interval=0.2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 401
        keyed = {"Authorization": f"Bearer {API_KEY}"}
        assert (await client.get("/metrics", headers=keyed)).status_code == 200
        missing = await client.get(f"/v1/runs/{RUN_ID}", headers=keyed)
        assert missing.status_code == 404
    await stop(children[0])

    text = log.read_text()
    entries = json_lines(text)
    assert entries and all(entry["level"] in {"INFO", "WARNING"} for entry in entries)
    assert API_KEY not in text
