"""Prometheus metrics (``GET /metrics``): requests by route and status, latency, batch sizes, queue depth, and
what the model answers: the top-1 confidence and the predicted class of each image, to watch for drift (inputs
unlike the training data lower the confidence and shift the classes).

Each app gets its own registry, so several apps in one process (tests, a notebook) do not collide.
The request counters sit in a plain ASGI middleware, outside authentication, so refused requests
(401, 413, 503) are counted too; the route label is the route's template (``/v1/predict``), never
the raw path, and a method outside HTTP's own is counted as ``other``, so a scan of random URLs or
made-up methods cannot grow the label set.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("resnetkit_http_requests", "HTTP requests answered, by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("resnetkit_http_request_duration_seconds",
                                 "Time from request start to the last response byte, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("resnetkit_batch_size", "Images per forward pass of the model",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("resnetkit_batch_duration_seconds", "Time of one forward pass",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("resnetkit_queue_depth", "Images waiting for the model", registry=self.registry)
        self.images = Counter("resnetkit_images_predicted", "Images classified", registry=self.registry)
        self.image_errors = Counter("resnetkit_image_errors", "Uploads refused, by HTTP status", ["status"],
                                    registry=self.registry)
        # Ended by the server, not the app: past --max-connections (answered 503), too slow to send a request's
        # headers (--read-timeout), or still sending, past its deadline, a body the answer came before (late_body).
        self.connections_closed = Counter("resnetkit_connections_closed", "Connections the server ended itself "
                                          "(not the app), by reason", ["reason"], registry=self.registry)
        for reason in ("max_connections", "read_timeout", "late_body"):
            self.connections_closed.labels(reason)  # zeros, so that alerts see the series before the first one
        self.ready = Gauge("resnetkit_ready", "1 once the model is loaded and warmed up", registry=self.registry)
        self.confidence = Histogram("resnetkit_prediction_confidence", "Top-1 probability of each image answered",
                                    buckets=CONFIDENCE_BUCKETS, registry=self.registry)
        # One series per class of the model (its index: names may repeat, ImageNet has two "crane"): bounded by the
        # model, never by the requests.
        self.predicted = Counter("resnetkit_predicted_class", "Images answered, by their top-1 class",
                                 ["index", "label"], registry=self.registry)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def expect_classes(self, class_names: list[str]) -> None:
        """A zero for every class of the model, so that a class never predicted is a series too (drift alerts)."""
        for index, name in enumerate(class_names):
            self.predicted.labels(str(index), name)

    def observe_answer(self, index: int, label: str, probability: float) -> None:
        """One image's answer: its top-1 class and probability."""
        self.confidence.observe(probability)
        self.predicted.labels(str(index), label).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)


class MetricsMiddleware:
    """Count and time every HTTP request by its route template and final status."""

    def __init__(self, app: Any, metrics: Metrics, routes: frozenset[str] = frozenset()) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        started = False

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when --graceful-timeout ends a shutdown: the client gets the 503
            # the docs promise (not uvicorn's plain 500) and the log no "Exception in ASGI application" traceback.
            if not started:
                body = json.dumps({"detail": "the server is shutting down; send the request again"}).encode()
                await send_and_record({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"retry-after", b"5"), (b"connection", b"close")]})
                await send_and_record({"type": "http.response.body", "body": body})
        finally:
            # Starlette puts the matched route in the scope; older versions do not, so fall back to
            # the path when it is one of the app's own.
            label = getattr(scope.get("route"), "path", None) or (
                scope["path"] if scope["path"] in self.routes else "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(label, method, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
