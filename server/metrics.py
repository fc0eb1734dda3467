"""Prometheus metrics on the metrics port: request counts by status, and per-model batcher figures.

Model figures are read from the batchers' statistics when Prometheus scrapes, so the request path pays
for one counter increment and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cnnserve.service.metrics import RequestMetrics


class ServerMetrics(RequestMetrics):
    """The request counts (gRPC by method, HTTP by route), and the statistics of the served model versions."""

    def __init__(self) -> None:
        super().__init__()
        self._http_requests = Counter(
            "cnnserve_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, str], Counter] = {}

    def http_request(self, route: str, status: str) -> None:
        child = self._http_children.get((route, status))
        if child is None:
            child = self._http_children[(route, status)] = self._http_requests.labels(route, status)
        child.inc()

    def http_count(self, route: str, status: str) -> int:
        """How many requests of ``route`` (its label, e.g. "POST /v2/models/{name}/infer") got ``status``."""
        value = self.registry.get_sample_value("cnnserve_http_requests_total", {"route": route, "status": status})
        return int(value or 0)

    def watch_models(self, versions: Callable[[], Iterable]) -> None:
        """Export the statistics of the served versions (callable returns ServedVersion objects)."""
        self.registry.register(_ModelCollector(versions))


class _ModelCollector(Collector):
    def __init__(self, versions: Callable[[], Iterable]) -> None:
        self._versions = versions

    def collect(self) -> Iterable[Metric]:
        labels = ["model", "version"]
        inferences = CounterMetricFamily("cnnserve_inference", "Samples inferred successfully", labels=labels)
        executions = CounterMetricFamily("cnnserve_execution", "Model executions (batches)", labels=labels)
        success = CounterMetricFamily("cnnserve_request_success", "Successful requests", labels=labels)
        failed = CounterMetricFamily("cnnserve_request_failure", "Failed requests", labels=labels)
        rejected = CounterMetricFamily(
            "cnnserve_queue_rejected", "Requests refused because the queue was full", labels=labels
        )
        expired = CounterMetricFamily(
            "cnnserve_queue_expired",
            "Requests dropped because their deadline passed in the queue",
            labels=labels,
        )
        queue_ns = CounterMetricFamily("cnnserve_queue_duration_ns", "Total time requests waited", labels=labels)
        infer_ns = CounterMetricFamily("cnnserve_compute_infer_duration_ns", "Total model time", labels=labels)
        depth = GaugeMetricFamily("cnnserve_queue_samples", "Samples waiting in the queue now", labels=labels)
        batches = CounterMetricFamily(
            "cnnserve_batch_executions", "Executions by batch size", labels=[*labels, "batch_size"]
        )
        for v in self._versions():
            key = [v.spec.name, v.spec.version]
            s = v.stats
            inferences.add_metric(key, s.inference_count)
            executions.add_metric(key, s.execution_count)
            success.add_metric(key, s.success.count)
            failed.add_metric(key, s.fail.count)
            rejected.add_metric(key, s.rejected)
            expired.add_metric(key, s.expired)
            queue_ns.add_metric(key, s.queue.ns)
            infer_ns.add_metric(key, s.compute_infer.ns)
            depth.add_metric(key, v.batcher.queued_samples)
            for size, b in sorted(s.batch_stats.items()):
                batches.add_metric([*key, str(size)], b.compute_infer.count)
        yield from (
            inferences,
            executions,
            success,
            failed,
            rejected,
            expired,
            queue_ns,
            infer_ns,
            depth,
            batches,
        )
