"""Request counts by method and status code, in a registry of the process's own (a Prometheus endpoint optional).

The server exports them on its metrics port (``cnnserve.server.metrics`` adds the models' figures); the
sidecar keeps them for its logs and tests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server


class RequestMetrics:
    """One registry per server, so several servers can live in one process (tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "cnnserve_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}
        self._http = None

    def request(self, method: str, code: str) -> None:
        child = self._children.get((method, code))
        if child is None:  # labels() takes a lock and validates every time: look each pair up once
            child = self._children[(method, code)] = self._requests.labels(method, code)
        child.inc()

    def count(self, method: str, code: str) -> int:
        """How many ``method`` calls were answered ``code`` so far."""
        value = self.registry.get_sample_value("cnnserve_requests_total", {"method": method, "code": code})
        return int(value or 0)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
