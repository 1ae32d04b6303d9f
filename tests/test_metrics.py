"""Metrics: the API's `GET /metrics` and a worker's Prometheus endpoint, scraped for real.

The API's metrics come from its own prometheus-client registry; a worker's from the
Temporal SDK runtime, which serves the SDK's own metrics and LoopLlama's run and model
metrics (recorded on the SDK's meter) on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.registry import build_activities
from api.app import create_app
from core.contract import RUN_WORKFLOW_TYPE
from core.devserver import DevServer
from core.settings import Settings
from core.temporal import connect
from core.worker_metrics import RunFinishes
from tests.conftest import (
    API_KEY,
    crew,
    eventually,
    for_role,
    free_port,
    unique_tag,
    worker_process_env,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, get_run, reaped, trigger, wait_for_status
from workflows.registry import WORKFLOWS, workflow_runner

OFFLINE = "loopllama-offline"
CLAUDE = "claude-sonnet-4-6"


# A sample line of the Prometheus text format: name{labels} value.
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text page, named as written (a parser would add
    `_total` to the SDK's counters, which it exports without)."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is not None:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            found.append((match.group(1), labels, float(match.group(3))))
    return found


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    return sum(
        sample_value for sample_name, sample_labels, sample_value in samples(text)
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def names(text: str) -> set[str]:
    return {name for name, _, _ in samples(text)}


# --------------------------------------------------------------------------- the API


async def test_metrics_need_the_api_key_and_health_and_docs_stay_open(
    api: httpx.AsyncClient, anon_api: httpx.AsyncClient
) -> None:
    refused = await anon_api.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"]
    assert refused.headers["www-authenticate"] == "Bearer"
    wrong = await anon_api.get("/metrics", headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 401
    assert (await anon_api.get("/health")).status_code == 200
    assert (await anon_api.get("/docs")).status_code == 200

    scraped = await api.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    # The refused scrapes were counted; answered before routing, they have no route.
    assert value(scraped.text, "loopllama_http_requests_total",
                 method="GET", route="unmatched", code="401") == 2
    assert value(scraped.text, "loopllama_http_requests_total",
                 method="GET", route="/health", code="200") == 1


async def test_triggering_a_run_moves_the_counters_by_route_template(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    before = (await api.get("/metrics")).text
    assert value(before, "loopllama_runs_triggered_total") == 0

    workflow = await create_workflow(api, crew("writer", model=OFFLINE))
    run = await trigger(api, workflow["id"], "Draft the brief.")
    await wait_for_status(api, run["id"], "completed")
    await get_run(api, run["id"])
    assert (await api.get("/v1/nowhere")).status_code == 404

    text = (await api.get("/metrics")).text
    assert value(text, "loopllama_runs_triggered_total") == 1
    assert value(text, "loopllama_http_requests_total", method="POST",
                 route="/v1/workflows/{workflow_id}/runs", code="202") == 1
    assert value(text, "loopllama_http_requests_total", method="POST",
                 route="/v1/workflows", code="201") == 1
    # The latency histogram is labelled by template too; its count matches the reads.
    reads = value(text, "loopllama_http_requests_total", method="GET",
                  route="/v1/runs/{run_id}", code="200")
    assert reads >= 2
    assert value(text, "loopllama_http_request_duration_seconds_count", method="GET",
                 route="/v1/runs/{run_id}", code="200") == reads
    assert value(text, "loopllama_http_request_duration_seconds_bucket", method="GET",
                 route="/v1/runs/{run_id}", code="200", le="+Inf") == reads
    assert value(text, "loopllama_http_requests_total", route="unmatched", code="404") == 1
    # Ids never become label values: the series stay bounded.
    assert run["id"] not in text and workflow["id"] not in text


async def test_each_app_has_its_own_registry(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    assert first.state.metrics.registry is not second.state.metrics.registry
    transport = httpx.ASGITransport(app=first)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers=headers) as client:
        await client.get("/health")
        await client.get("/health")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second),
                                 base_url="http://t", headers=headers) as client:
        text = (await client.get("/metrics")).text
    assert value(text, "loopllama_http_requests_total", route="/health") == 0


# --------------------------------------------------------------------------- workers


def metrics_worker(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    """`loopllama worker` serving its metrics on 127.0.0.1:`port`."""
    env = worker_process_env(settings)
    env["LOOPLLAMA_WORKER_METRICS_PORT"] = str(port)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"], env=env, stdout=out,
            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
        )


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return response.text


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    with reaped(processes):
        yield processes


async def test_worker_serves_sdk_and_model_metrics_on_loopback(
    api: httpx.AsyncClient, settings: Settings, fake_anthropic: FakeAnthropic,
    tmp_path: Path, worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    log = tmp_path / "worker.log"
    worker_processes.append(metrics_worker(settings, port, log))

    async def serving() -> str | None:
        assert worker_processes[0].poll() is None, log.read_text()
        try:
            return await scrape(port)
        except httpx.TransportError:
            return None

    await eventually(serving, within=60, interval=0.2)

    async def polling() -> bool:
        return f"Metrics: http://127.0.0.1:{port}/metrics." in log.read_text()

    await eventually(polling, within=60, interval=0.2)

    tag = unique_tag()
    good = await create_workflow(api, [*crew("planner", model=OFFLINE, tag=tag),
                                       *crew("writer", model=CLAUDE, tag=tag)])
    fake_anthropic.reply_error(400, message="bad model", when=for_role(tag, "critic"))
    bad = await create_workflow(api, crew("critic", model=CLAUDE, tag=tag))
    done = await trigger(api, good["id"], "Plan and write the brief.")
    failed = await trigger(api, bad["id"], "Criticise the brief.")
    await wait_for_status(api, done["id"], "completed")
    await wait_for_status(api, failed["id"], "failed")

    async def finished() -> str | None:
        text = await scrape(port)
        counted = (value(text, "loopllama_runs_finished_total", status="completed"),
                   value(text, "loopllama_runs_finished_total", status="failed"))
        return text if counted == (1, 1) else None

    text = await eventually(finished, within=20, interval=0.2)
    # The SDK's own metrics, as the SDK names them.
    assert value(text, "temporal_workflow_completed", workflow_type="CrewRun") == 1
    assert value(text, "temporal_workflow_failed", workflow_type="CrewRun") == 1
    assert value(text, "temporal_activity_execution_latency_count",
                 activity_type="model_call") >= 1
    assert "temporal_worker_task_slots_available" in names(text)
    # LoopLlama's model metrics, on the same endpoint.
    for model in (OFFLINE, CLAUDE):
        assert value(text, "loopllama_model_call_latency_count", model=model) >= 1, model
        assert value(text, "loopllama_model_tokens_total", model=model, kind="input") > 0
        assert value(text, "loopllama_model_tokens_total", model=model, kind="output") > 0
    assert value(text, "loopllama_model_call_errors_total", model=CLAUDE,
                 error_class="ModelRequestRejected") == 1
    assert value(text, "loopllama_model_call_latency_count", model=CLAUDE,
                 outcome="error") == 1
    assert value(text, "loopllama_model_call_errors_total", model=OFFLINE) == 0


async def test_finished_runs_are_counted_once_however_often_they_replay(
    api: httpx.AsyncClient, settings: Settings, dev_server: DevServer,
    fake_anthropic: FakeAnthropic,
) -> None:
    # No workflow cache: every workflow task replays the run's whole history first.
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))
    client = await connect(dev_server.address, settings.temporal_namespace,
                           blob_dir=settings.blob_dir, runtime=runtime)
    activities = build_activities(settings)
    worker = Worker(
        client, task_queue=settings.temporal_task_queue, workflows=list(WORKFLOWS),
        workflow_runner=workflow_runner(), activities=activities.activities,
        plugins=[activities.plugin()],
        interceptors=[RunFinishes(RUN_WORKFLOW_TYPE)], max_cached_workflows=0,
    )
    async with worker:
        tag = unique_tag()
        three = await create_workflow(api, crew("a", "b", "c", model=OFFLINE, tag=tag))
        completed = await trigger(api, three["id"], "Three steps.")
        fake_anthropic.reply_error(400, message="no", when=for_role(tag, "d"))
        failing = await create_workflow(api, crew("d", model=CLAUDE, tag=tag))
        failed = await trigger(api, failing["id"], "Fail.")
        asking = await create_workflow(api, crew("e", model=OFFLINE, tag=tag),
                                       human_in_the_loop={"allow_input_requests": True})
        cancelled = await trigger(api, asking["id"], "Ask me about tone first.")
        await wait_for_status(api, completed["id"], "completed")
        await wait_for_status(api, failed["id"], "failed")
        await wait_for_status(api, cancelled["id"], "waiting_input")
        assert (await api.post(f"/v1/runs/{cancelled['id']}/cancel")).status_code == 202
        await wait_for_status(api, cancelled["id"], "cancelled")

        async def counted() -> str | None:
            text = await scrape(port)
            statuses = [value(text, "loopllama_runs_finished_total", status=status)
                        for status in ("completed", "failed", "cancelled")]
            return text if statuses == [1, 1, 1] else None

        await eventually(counted, within=20, interval=0.2)
        # A query on a closed run (as the Temporal UI makes) replays it to its end on
        # the worker: that end is not counted again.
        for run in (completed, failed, cancelled):
            await client.get_workflow_handle(run["id"]).query("get")
        text = await scrape(port)
        assert [value(text, "loopllama_runs_finished_total", status=status)
                for status in ("completed", "failed", "cancelled")] == [1, 1, 1]
        # Many workflow tasks ran (each a full replay), yet each run counted once.
        assert value(text, "temporal_workflow_task_execution_latency_count",
                     workflow_type="CrewRun") >= 5
        # Nothing else finishes as a run: the definitions stay open.
        assert value(text, "loopllama_runs_finished_total") == 3
