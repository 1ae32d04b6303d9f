"""Traces (issue 13, item 4): OTLP/HTTP to a real receiver on 127.0.0.1.

With OTEL_* set, one trace runs from the API's HTTP span through the StartWorkflow span
and the workflow's spans to each model call, across processes; without them nothing of
the OpenTelemetry SDK is even imported.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from temporalio.client import Client

from api.app import create_app
from core.settings import Settings, SettingsError
from core.temporal import connect_as
from core.tracing import API_SERVICE, WORKER_SERVICE, Tracing, start_tracing
from tests.conftest import (
    API_KEY,
    crew,
    eventually,
    for_role,
    unique_tag,
    worker_process_env,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, reaped, trigger, wait_for_status
from worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
BRIEF = "Draft a 200-word brief on a new feature-flag system."
TRIGGER_ROUTE = "POST /v1/workflows/{workflow_id}/runs"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


# --- an OTLP/HTTP receiver --------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """A collector's OTLP/HTTP traces endpoint: POST /v1/traces (protobuf), kept in memory."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver._add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:  # noqa: N802 (a page for the http_request tool)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        service=str(resource.get("service.name")),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    ))
        with self._lock:
            self._spans.extend(spans)

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def named(self, name: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.name == name]

    def lineage(self, span: ReceivedSpan) -> list[str]:
        """Names of `span` and its ancestors, innermost first, as far as they arrived."""
        by_id = {s.span_id: s for s in self.spans}
        names = [span.name]
        while span.parent_id and span.parent_id in by_id:
            span = by_id[span.parent_id]
            names.append(span.name)
        return names


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def traced(settings: Settings, otlp: OtlpReceiver) -> Settings:
    return replace(settings, otel_traces_endpoint=f"{otlp.url}/v1/traces")


@asynccontextmanager
async def traced_api(settings: Settings, tracing: Tracing) -> AsyncIterator[httpx.AsyncClient]:
    """The app as `loopllama api` builds it: its own (traced) Temporal client, in process."""
    app = create_app(settings, tracing=tracing)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as api,
    ):
        async def connected() -> bool:
            return (await api.get("/health")).status_code == 200

        await eventually(connected)
        yield api


# --- one trace, API to model calls ------------------------------------------------------


async def test_one_trace_from_the_request_to_each_model_and_tool_call(
    settings: Settings, temporal: Client, fake_anthropic: FakeAnthropic, otlp: OtlpReceiver
) -> None:
    settings = replace(traced(settings, otlp), http_allowlist=("127.0.0.1",))
    api_tracing, worker_tracing = start_tracing(settings, API_SERVICE), start_tracing(
        settings, WORKER_SERVICE)
    assert api_tracing is not None and worker_tracing is not None
    tag = unique_tag()
    fake_anthropic.reply_text("1. Define flags.", tokens_in=180, tokens_out=120,
                              when=for_role(tag, "planner"))
    try:
        async with (
            traced_api(settings, api_tracing) as api,
            build_worker(temporal, settings, tracing=worker_tracing),
        ):
            # Claude (the fake) plans; the offline model fetches the URL, then writes.
            workflow = await create_workflow(api, crew("planner", tag=tag) + crew(
                "writer", model="loopllama-offline", tag=tag, tools=["http_request"]))
            triggered = await trigger(api, workflow["id"], f"{BRIEF} See {otlp.url}/status")
            run = await wait_for_status(api, triggered["id"], "completed", "failed")
            assert run["status"] == "completed", run["error"]
    finally:
        await asyncio.to_thread(worker_tracing.shutdown)  # exports what is queued
        await asyncio.to_thread(api_tracing.shutdown)

    [http] = otlp.named(TRIGGER_ROUTE)
    assert (http.service, http.kind) == (API_SERVICE, SERVER_KIND)
    assert http.attributes["loopllama.workflow_id"] == workflow["id"]
    trace = [s for s in otlp.spans if s.trace_id == http.trace_id]

    def named(name: str) -> list[ReceivedSpan]:
        return [s for s in trace if s.name == name]

    [start] = named("StartWorkflow:CrewRun")
    assert start.service == API_SERVICE
    assert otlp.lineage(start) == ["StartWorkflow:CrewRun", TRIGGER_ROUTE]
    assert start.attributes["loopllama.run_id"] == run["id"]
    assert start.attributes["loopllama.workflow_id"] == workflow["id"]
    assert start.attributes["temporalWorkflowID"] == run["id"]

    [run_span] = named("RunWorkflow:CrewRun")
    assert run_span.service == WORKER_SERVICE
    assert otlp.lineage(run_span) == ["RunWorkflow:CrewRun", "StartWorkflow:CrewRun",
                                      TRIGGER_ROUTE]

    planner, writer = run["steps"]
    # One call for the planner; two for the writer (the tool call, then its answer).
    for activity, step, model, calls in (
        ("model_call", planner, "claude-sonnet-4-6", 1),
        ("model_call", writer, "loopllama-offline", 2),
        ("http_request", None, None, 1),
    ):
        # One activity serves every model: its spans are told apart by the model.
        spans = [span for span in named(f"RunActivity:{activity}")
                 if model is None or span.attributes.get("gen_ai.request.model") == model]
        assert len(spans) == calls, (activity, sorted({s.name for s in trace}))
        for span in spans:
            assert span.service == WORKER_SERVICE
            # The workflow's spans (RunWorkflow, StartActivity) hang off StartWorkflow.
            assert otlp.lineage(span) == [
                f"RunActivity:{activity}", f"StartActivity:{activity}",
                "StartWorkflow:CrewRun", TRIGGER_ROUTE,
            ]
            assert span.attributes["loopllama.run_id"] == run["id"]
            assert span.attributes["temporalWorkflowID"] == run["id"]
            assert span.attributes["loopllama.attempt"] == 1
            if model is not None:
                assert span.attributes["gen_ai.request.model"] == model
                assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 0
        if step is not None:
            assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in spans) == (
                step["tokens_in"])
            assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in spans) == (
                step["tokens_out"])
    assert named("RunActivity:model_call")[0].attributes[
        "gen_ai.response.finish_reasons"] == ["end_turn"]
    assert planner["tokens_in"] == 180
    [tool] = named("RunActivity:http_request")
    assert tool.attributes["http.request.method"] == "GET"
    assert tool.attributes["http.response.status_code"] == 200

    # Every request is a span, with the ids in its path; health checks are not.
    reads = otlp.named("GET /v1/runs/{run_id}")
    assert reads and all(s.attributes["loopllama.run_id"] == run["id"] for s in reads)
    assert not otlp.named("GET /health")


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`loopllama worker` with exactly `env`."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


async def test_a_worker_process_joins_the_trace_and_flushes_on_sigterm(
    settings: Settings, temporal: Client, otlp: OtlpReceiver, tmp_path: Path
) -> None:
    """`loopllama worker` reads OTEL_* itself; spans still queued at SIGTERM are sent."""
    settings = traced(settings, otlp)
    env = {
        **{k: v for k, v in worker_process_env(settings).items() if not k.startswith("OTEL_")},
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        # No export on a timer: whatever arrives was sent by the flush at shutdown.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    api_tracing = start_tracing(settings, API_SERVICE)
    assert api_tracing is not None
    processes: list[subprocess.Popen[bytes]] = []
    with reaped(processes):
        log = tmp_path / "worker.log"
        processes.append(start_worker(env, log))
        try:
            async with traced_api(settings, api_tracing) as api:
                workflow = await create_workflow(api, crew("writer", model="loopllama-offline"))
                run = await wait_for_status(
                    api, (await trigger(api, workflow["id"], BRIEF))["id"], "completed", "failed"
                )
                assert run["status"] == "completed", run["error"]
        finally:
            await asyncio.to_thread(api_tracing.shutdown)
        assert not [s for s in otlp.spans if s.service == WORKER_SERVICE]
        processes[0].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(processes[0].wait, 30) == 0, log.read_text()

    [http] = otlp.named(TRIGGER_ROUTE)
    [model] = otlp.named("RunActivity:model_call")
    assert model.service == WORKER_SERVICE  # OTEL_SERVICE_NAME unset: the default
    assert model.trace_id == http.trace_id
    assert model.attributes["loopllama.run_id"] == run["id"]
    assert model.attributes["gen_ai.usage.input_tokens"] == run["steps"][0]["tokens_in"]


# --- off unless asked -------------------------------------------------------------------


def test_the_standard_variables_turn_tracing_on() -> None:
    def endpoint(**env: str) -> str | None:
        return Settings.from_env(env).otel_traces_endpoint

    assert endpoint() is None
    assert endpoint(OTEL_SERVICE_NAME="x") is None
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318") == "http://c:4318/v1/traces"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="https://c/otlp/") == "https://c/otlp/v1/traces"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318",
                    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://t:4318/traces") == (
        "http://t:4318/traces")
    base = "http://c:4318"
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT=base, OTEL_TRACES_EXPORTER="none") is None
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT=base, OTEL_SDK_DISABLED="TRUE") is None
    assert endpoint(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318",
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf") == "http://c:4318/v1/traces"
    assert Settings.from_env({"OTEL_SERVICE_NAME": " crew-api "}).otel_service_name == "crew-api"
    for bad, says in (
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTLP/HTTP only"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTLP/HTTP only"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp or none"),
    ):
        with pytest.raises(SettingsError, match=says):
            Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **bad})
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must start"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"})


_UNTRACED_PROCESS = """
import asyncio, json, sys
from api.app import create_app
from core.settings import Settings
from core.temporal import connect_as
from core.tracing import API_SERVICE, start_tracing
from worker import build_worker

async def main():
    settings = Settings.from_env()
    app = create_app(settings)
    client = await connect_as(settings, settings.temporal_address)
    worker = build_worker(client, settings, tracing=start_tracing(settings, API_SERVICE))
    print(json.dumps({
        "tracing": start_tracing(settings, API_SERVICE) is not None,
        "app_instrumented": getattr(app, "_is_instrumented_by_opentelemetry", False),
        "interceptors": [type(i).__name__ for i in worker.config()["interceptors"]],
        "loaded": sorted(m for m in sys.modules if m.startswith((
            "opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation",
            "temporalio.contrib.opentelemetry"))),
    }))

asyncio.run(main())
"""


def test_without_otel_variables_nothing_of_opentelemetry_is_loaded(settings: Settings) -> None:
    env = {k: v for k, v in worker_process_env(settings).items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", _UNTRACED_PROCESS], env=env, cwd=ROOT,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert (seen["tracing"], seen["app_instrumented"], seen["loaded"]) == (False, False, [])
    assert "ExpectedFailures" in seen["interceptors"]
    assert not {"TracingInterceptor", "_LoopLlamaIds"} & set(seen["interceptors"])


async def test_a_worker_is_traced_once_even_on_a_traced_client(
    settings: Settings, temporal: Client, otlp: OtlpReceiver
) -> None:
    tracing = start_tracing(traced(settings, otlp), WORKER_SERVICE)
    assert tracing is not None
    try:
        plain = build_worker(temporal, settings, tracing=tracing)
        names = [type(i).__name__ for i in plain.config()["interceptors"]]
        # Appended to the worker's own, in the order that sets ids on the open span.
        assert names[-2:] == ["TracingInterceptor", "_LoopLlamaIds"]
        assert "ExpectedFailures" in names and names.count("TracingInterceptor") == 1
        traced_client = await connect_as(settings, settings.temporal_address or "",
                                         interceptors=tracing.client_interceptors())
        # A worker inherits its client's interceptors: adding them again would double spans.
        assert tracing.worker_interceptors(traced_client) == []
    finally:
        tracing.shutdown()
