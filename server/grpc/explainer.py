"""The cnnserve.v1.Explainer servicer of the main server: the caller's deadline and token, handed to the forwarder."""

from __future__ import annotations

from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.server.explainer import ExplainerHandler
from cnnserve.server.metrics import ServerMetrics
from cnnserve.service.rpc import Servicer, rpc

# The caller's metadata that travels on to the sidecar: its bearer token, which the sidecar checks too.
FORWARDED_METADATA = frozenset({"authorization"})


def _forwarded(method: str):
    """A servicer method that hands its request to the forwarder as it is."""

    async def call(self, request, context):
        return await self._forward(method, request, context)

    call.__name__ = call.__qualname__ = method  # the name the calls are counted under
    return rpc(call)


class ExplainerServicer(Servicer, pb_grpc.ExplainerServicer):
    def __init__(self, handler: ExplainerHandler, metrics: ServerMetrics, admission=None) -> None:
        self.handler = handler
        self.metrics = metrics
        self.admission = admission

    async def _forward(self, method: str, request, context):
        metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k in FORWARDED_METADATA)
        return await self.handler.forward(method, request, timeout=context.time_remaining(), metadata=metadata)

    Heatmap = _forwarded("Heatmap")
    Activations = _forwarded("Activations")
    FilterPatterns = _forwarded("FilterPatterns")
    ListLayers = _forwarded("ListLayers")
    Faithfulness = _forwarded("Faithfulness")
