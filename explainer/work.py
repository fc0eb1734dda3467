"""Bounded work in the sidecar: an admission queue counted in images, stop checks, and its metrics.

Every Heatmap, Activations and FilterPatterns request is admitted with its size in images (a FilterPatterns
request counts one image per filter it ascends); admitted requests wait for the one TensorFlow worker in
order. Past ``max_queued_images`` (waiting and running together) a request is refused at once with
RESOURCE_EXHAUSTED; an empty queue admits any one request, so a request the other limits allow can always
run. A request whose deadline passed or whose caller left while it waited is dropped before compute, and a
running one stops at its next batch boundary (a Score-CAM chunk, a gradient-ascent step) when its caller
leaves or its deadline passes (``Job.check``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cnnserve.service.errors import Cancelled, DeadlineExceeded, ResourceExhausted


class Job:
    """One admitted request: its size, deadline (time.monotonic) and whether its caller has gone."""

    def __init__(self, method: str, images: int, deadline_at: float | None) -> None:
        self.method = method
        self.images = images
        self.deadline_at = deadline_at
        self.abandoned = threading.Event()

    def check(self) -> None:
        """Raise if the work must stop now: its caller left (Cancelled) or its deadline passed."""
        if self.abandoned.is_set():
            raise Cancelled(f"{self.method}: the caller went away; stopped")
        if self.deadline_at is not None and time.monotonic() > self.deadline_at:
            raise DeadlineExceeded(f"{self.method}: the deadline passed; stopped")


class WorkQueue(Collector):
    """The admission bound and the figures the sidecar's metrics port exports (a Prometheus collector)."""

    SETTING = "CNNSERVE_EXPLAINER_MAX_QUEUED_IMAGES"

    def __init__(self, max_images: int) -> None:
        self.max_images = max_images
        self.images = 0  # admitted, waiting or running
        self.requests = 0
        self.computing = 0  # requests on the worker now
        self.compute_seconds: dict[str, float] = {}
        self.dropped: dict[str, int] = {}  # reason -> requests dropped before compute
        self.stopped: dict[str, int] = {}  # reason -> requests stopped during compute
        self._lock = threading.Lock()

    def admit(self, method: str, images: int, deadline_at: float | None) -> Job:
        with self._lock:
            if self.requests and self.images + images > self.max_images:
                raise ResourceExhausted(
                    f"explainer queue is full: {self.images} images queued, {images} more would exceed its limit "
                    f"of {self.max_images} ({self.SETTING}); retry with backoff"
                )
            self.images += images
            self.requests += 1
        return Job(method, images, deadline_at)

    def release(self, job: Job) -> None:
        with self._lock:
            self.images -= job.images
            self.requests -= 1

    def dropped_before_compute(self, job: Job, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def stopped_during_compute(self, reason: str) -> None:
        with self._lock:
            self.stopped[reason] = self.stopped.get(reason, 0) + 1

    def computing_started(self) -> None:
        with self._lock:
            self.computing += 1

    def computed(self, method: str, seconds: float) -> None:
        with self._lock:
            self.computing -= 1
            self.compute_seconds[method] = self.compute_seconds.get(method, 0.0) + seconds

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            images, requests, computing = self.images, self.requests, self.computing
            compute, dropped, stopped = dict(self.compute_seconds), dict(self.dropped), dict(self.stopped)
        yield GaugeMetricFamily(
            "cnnserve_explainer_queue_images", "Images admitted now (waiting or computing)", value=images
        )
        yield GaugeMetricFamily(
            "cnnserve_explainer_queue_requests", "Requests admitted now (waiting or computing)", value=requests
        )
        yield GaugeMetricFamily("cnnserve_explainer_computing", "Requests on the worker now", value=computing)
        yield GaugeMetricFamily(
            "cnnserve_explainer_queue_limit_images", "The admission bound in images", value=self.max_images
        )
        seconds = CounterMetricFamily(
            "cnnserve_explainer_compute_seconds", "Seconds the worker computed, by method", labels=["method"]
        )
        for method, value in sorted(compute.items()):
            seconds.add_metric([method], value)
        yield seconds
        for name, doc, counts in (
            ("cnnserve_explainer_dropped", "Requests dropped before compute, by reason", dropped),
            ("cnnserve_explainer_stopped", "Requests stopped at a batch boundary, by reason", stopped),
        ):
            family = CounterMetricFamily(name, doc, labels=["reason"])
            for reason, value in sorted(counts.items()):
                family.add_metric([reason], value)
            yield family
