"""Who may start a call now: the drain gate and the admission limit, and gRPC core's own bounds."""

from __future__ import annotations

import grpc


class AdmissionGate:
    """Who may start a call now: refuses new calls while draining, and work calls beyond the admission limit.

    - Draining (``draining`` set at shutdown, before the gRPC server stops): every gated call is refused with
      UNAVAILABLE, a clear, retryable answer instead of a call cancelled by the transport while it closes.
    - Admission: at most ``limit`` work calls (the methods in ``limited``: inference, classification,
      explanations) run at once; one more is refused with RESOURCE_EXHAUSTED and a message naming the limit.
      Together with the transport limit in ``transport_options`` this means a burst is answered, call by
      call, with OK or RESOURCE_EXHAUSTED: gRPC core never drops a call the application has not picked up.

    Both refusals are counted in ``cnnserve_requests_total`` under the method's name. Every servicer method
    consults it through its wrapper (``cnnserve.service.rpc``), not a server interceptor: a grpc.aio
    interceptor, even one that only awaits its continuation, costs a measurable share of the transport's
    request rate (docs/benchmarks.md). Health and reflection stay ungated.
    """

    DRAINING = "server is shutting down; retry on another replica"

    def __init__(self, limit: int, limited: frozenset[str], setting: str) -> None:
        self.draining = False
        self.limit = limit
        self.limited = limited
        self.inflight = 0
        self._setting = setting

    def enter(self, method: str) -> tuple[grpc.StatusCode, str] | None:
        """None when ``method`` may start now (then counted in flight, if limited); else its refusal."""
        if self.draining:
            return grpc.StatusCode.UNAVAILABLE, self.DRAINING
        if method in self.limited:
            if self.inflight >= self.limit:
                return grpc.StatusCode.RESOURCE_EXHAUSTED, (
                    f"server is at its admission limit of {self.limit} concurrent calls ({self._setting}); "
                    "retry with backoff"
                )
            self.inflight += 1
        return None

    def leave(self, method: str) -> None:
        if method in self.limited:
            self.inflight -= 1


def transport_options(max_pending_calls: int) -> list[tuple[str, int]]:
    """gRPC core's own limits, set so that the application, not the transport, decides what is refused.

    ``grpc.server.max_pending_requests`` (and ``_hard_limit``) bound the calls the transport has accepted but
    the application has not picked up yet. Past gRPC core's defaults (1,000 soft, 3,000 hard, with random
    early drops in between) core cancels calls, and the caller sees a bare CANCELLED that nothing counts.
    With the bound raised, every call of a burst reaches the AdmissionGate, which answers it.

    HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS is left unlimited on purpose: a client that bursts on a new
    connection opens streams before it has seen the server's SETTINGS, and those past the limit are reset
    with REFUSED_STREAM (UNAVAILABLE at the caller).
    """
    return [
        ("grpc.server.max_pending_requests", max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", max_pending_calls),
    ]
