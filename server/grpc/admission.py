"""Who may start a call now: the drain gate and the admission limit on the servicers, and gRPC core's own bounds."""

from __future__ import annotations

import inspect
from typing import TypeVar

import grpc

from cnnserve.server.metrics import ServerMetrics

T = TypeVar("T")


class AdmissionGate:
    """Who may start a call now: refuses new calls while draining, and work calls beyond the admission limit.

    - Draining (``draining`` set at shutdown, before the gRPC server stops): every gated call is refused with
      UNAVAILABLE, a clear, retryable answer instead of a call cancelled by the transport while it closes.
    - Admission: at most ``limit`` work calls (the methods in ``limited``: inference, classification,
      explanations) run at once; one more is refused with RESOURCE_EXHAUSTED and a message naming the limit.
      Together with the transport limit in ``transport_options`` this means a burst is answered, call by
      call, with OK or RESOURCE_EXHAUSTED: gRPC core never drops a call the application has not picked up.

    Both refusals are counted in ``cnnserve_requests_total`` under the method's name. Applied by wrapping each
    servicer (``gate``) rather than as a server interceptor: a grpc.aio interceptor, even one that only awaits
    its continuation, costs a measurable share of the transport's request rate (docs/benchmarks.md). Health
    and reflection stay ungated.
    """

    DRAINING = "server is shutting down; retry on another replica"

    def __init__(self, metrics: ServerMetrics, limit: int, limited: frozenset[str], setting: str) -> None:
        self.metrics = metrics
        self.draining = False
        self.limit = limit
        self.limited = limited
        self.inflight = 0
        self._setting = setting

    def refusal(self) -> str:
        return (
            f"server is at its admission limit of {self.limit} concurrent calls ({self._setting}); retry with backoff"
        )

    def gate(self, servicer: T) -> T:
        """A stand-in for ``servicer`` whose RPC methods refuse new calls once draining or over the limit."""
        return _Gated(servicer, self)  # type: ignore[return-value]


class _Gated:
    def __init__(self, servicer: object, gate: AdmissionGate) -> None:
        self._servicer = servicer
        self._gate = gate

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)
        gate = self._gate
        limited = name in gate.limited

        async def check(context) -> None:
            if gate.draining:
                gate.metrics.request(name, "UNAVAILABLE")
                await context.abort(grpc.StatusCode.UNAVAILABLE, AdmissionGate.DRAINING)
            if limited and gate.inflight >= gate.limit:
                gate.metrics.request(name, "RESOURCE_EXHAUSTED")
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, gate.refusal())

        if inspect.isasyncgenfunction(method):

            async def gated_stream(request_or_iterator, context):
                await check(context)
                gate.inflight += limited
                stream = method(request_or_iterator, context)
                try:
                    async for item in stream:
                        yield item
                finally:
                    gate.inflight -= limited
                    await stream.aclose()

            return gated_stream
        if inspect.iscoroutinefunction(method):

            async def gated(request_or_iterator, context):
                await check(context)
                gate.inflight += limited
                try:
                    return await method(request_or_iterator, context)
                finally:
                    gate.inflight -= limited

            return gated
        return method


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
