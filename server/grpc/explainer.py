"""The cnnserve.v1.Explainer servicer of the main server: the caller's deadline and token, handed to the forwarder."""

from __future__ import annotations

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.server.explainer import ExplainerHandler
from cnnserve.server.metrics import ServerMetrics
from cnnserve.service.rpc import rpc

# The caller's metadata that travels on to the sidecar: its bearer token, which the sidecar checks too.
FORWARDED_METADATA = frozenset({"authorization"})


class ExplainerServicer(pb_grpc.ExplainerServicer):
    def __init__(self, handler: ExplainerHandler, metrics: ServerMetrics) -> None:
        self.handler = handler
        self.metrics = metrics

    async def _forward(self, method: str, request, context):
        metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k in FORWARDED_METADATA)
        return await self.handler.forward(method, request, timeout=context.time_remaining(), metadata=metadata)

    @rpc
    async def Heatmap(self, request: pb.HeatmapRequest, context) -> pb.HeatmapResponse:
        return await self._forward("Heatmap", request, context)

    @rpc
    async def Activations(self, request: pb.ActivationsRequest, context) -> pb.ActivationsResponse:
        return await self._forward("Activations", request, context)

    @rpc
    async def FilterPatterns(self, request: pb.FilterPatternsRequest, context) -> pb.FilterPatternsResponse:
        return await self._forward("FilterPatterns", request, context)

    @rpc
    async def ListLayers(self, request: pb.ListLayersRequest, context) -> pb.ListLayersResponse:
        return await self._forward("ListLayers", request, context)
