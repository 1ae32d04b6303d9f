"""`GET /metrics`: what this API process saw, in Prometheus text format (API key needed).

- `loopllama_runs_triggered_total`: runs this process accepted (202 answers to
  `POST /v1/workflows/{workflow_id}/runs`). Every trigger passes through an API
  process, so the sum over all of them counts every run. A repeat of a trigger with
  the same `Idempotency-Key` answers 202 again and is counted again.
- `loopllama_http_requests_total{method,route,code}` and
  `loopllama_http_request_duration_seconds{method,route,code}`: every HTTP request,
  labelled with the matched route's path template (`/v1/runs/{run_id}`, never the raw
  path, so ids do not multiply the series). A request no route handled (404, or
  answered before routing: 401 without a key, 413) is `unmatched`.
  The duration runs until the response starts (for an event stream, until it opens).

Runs *finishing* are counted by the workers (`loopllama_runs_finished_total` on their
metrics endpoint, core/worker_metrics.py): a run ends inside a worker, and no API
process sees every end.

The registry belongs to the app (`app.state.metrics`), so two apps in one process (as
in the tests) never share counters.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
TRIGGER_ROUTE = ("POST", "/v1/workflows/{workflow_id}/runs")
UNMATCHED = "unmatched"
# Anything else a client sends as a method is labelled "other": labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

router = APIRouter()


class ApiMetrics:
    """One app's metrics and the registry they are exposed from."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs_triggered = Counter(
            "loopllama_runs_triggered", "Runs triggered through this API process.",
            registry=self.registry,
        )
        labels = ("method", "route", "code")
        self.requests = Counter(
            "loopllama_http_requests", "HTTP requests, by route template and status code.",
            labels, registry=self.registry,
        )
        self.latency = Histogram(
            "loopllama_http_request_duration_seconds",
            "Seconds until the response started, by route template and status code.",
            labels, buckets=_BUCKETS, registry=self.registry,
        )

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        """Record one finished request."""
        method = method if method in _METHODS else "other"
        self.requests.labels(method, route, str(code)).inc()
        self.latency.labels(method, route, str(code)).observe(seconds)
        if (method, route) == TRIGGER_ROUTE and code == 202:
            self.runs_triggered.inc()


@router.get(METRICS_PATH, include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The app's metrics in Prometheus text format."""
    app_metrics: ApiMetrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)


class HttpMetricsMiddleware:
    """Count and time every HTTP request by method, route template and status code.

    Outermost of the app's middleware, so answers given before routing (401, 413) are
    counted too.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status: list[int] = []
        first_byte: list[float] = []

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                first_byte.append(time.perf_counter())
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            status.append(500)
            raise
        finally:
            if status:
                ended = first_byte[0] if first_byte else time.perf_counter()
                self.metrics.observe(scope["method"], route_template(scope, root_path),
                                     status[0], ended - started)


def route_template(scope: Scope, root_path: str) -> str:
    """The path template of the route that handled a request (after the app ran), or
    `unmatched`; `root_path` is the scope's before routing.

    Built from the route the router put in the scope, never from the raw path: a route
    of an included router may carry only its own part of the template
    (`/runs/{run_id}`), so the path's leading segments it does not cover (the router's
    prefix, `/v1`) are put back in front. A mount (the docs assets) moves `root_path`.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        full = scope["path"]
        segments = (full[len(root_path):] if full.startswith(root_path) else full).split("/")
        # Segments after the leading "/" that the route's own path does not cover.
        prefix = segments[1 : 1 + max(0, len(segments) - len(path.split("/")))]
        values = set(map(str, (scope.get("path_params") or {}).values()))
        if values.isdisjoint(prefix):
            return "".join("/" + segment for segment in prefix) + path
        return path
    mounted = scope.get("root_path", "")
    if isinstance(mounted, str) and mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path):] + "/{path}"
    return UNMATCHED
