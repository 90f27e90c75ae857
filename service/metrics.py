"""Prometheus metrics: request counts and latency per route template, and the served model version.

A pure ASGI middleware (not BaseHTTPMiddleware, which costs a task per request) labels each request by
its route template (``/users/{user_id}/recommendations``), never the raw path, so ids cannot blow up
the label cardinality. With several uvicorn workers each process keeps its own counters (scrape through
one worker per process, or set PROMETHEUS_MULTIPROC_DIR as prometheus-client documents).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ModelCollector(Collector):
    """Reads the served model's state at scrape time, so the gauges can never disagree with it."""

    def __init__(self, state: Callable[[], tuple[str | None, str | None, float | None, int]]) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        version, kind, loaded_at, failures = self.state()
        info = GaugeMetricFamily("movierec_model_info", "served model version (value 1)", labels=["version", "kind"])
        if version is not None:
            info.add_metric([version, kind or ""], 1.0)
        yield info
        yield GaugeMetricFamily("movierec_model_loaded_timestamp_seconds", "when the served model loaded",
                                value=loaded_at or 0.0)  # fmt: skip
        yield CounterMetricFamily("movierec_model_reload_failures", "model versions refused", value=failures)


class Metrics:
    def __init__(self, model_state: Callable[[], tuple[str | None, str | None, float | None, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ModelCollector(model_state))
        self.requests = Counter(
            "movierec_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "movierec_request_seconds", "request latency", ["method", "route"], buckets=BUCKETS, registry=self.registry
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # (method, route, status) -> (request counter, latency histogram): ``labels()`` validates and
        # locks on every call (~3 us for the pair); the label sets are few (routes x methods x statuses).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _series(self, method: str, template: str, status: int) -> tuple[Any, Any]:
        key = (method, template, status)
        series = self._children.get(key)
        if series is None:
            series = (
                self.metrics.requests.labels(method, template, str(status)),
                self.metrics.latency.labels(method, template),
            )
            self._children[key] = series  # a racing thread builds the same children (labels() is idempotent)
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            counter, histogram = self._series(scope.get("method", "GET"), template, status)
            counter.inc()
            histogram.observe(time.perf_counter() - start)
