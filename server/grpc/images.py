"""The cnnserve.v1.ImageService servicer: protobuf <-> plain values around the image handler."""

from __future__ import annotations

from cnnserve._proto.cnnserve.v1 import images_pb2 as pb
from cnnserve._proto.cnnserve.v1 import images_pb2_grpc as pb_grpc
from cnnserve.server.images import ImageHandler
from cnnserve.server.metrics import ServerMetrics
from cnnserve.service.rpc import Servicer, deadline_of, rpc


class ImageServicer(Servicer, pb_grpc.ImageServiceServicer):
    def __init__(self, handler: ImageHandler, metrics: ServerMetrics, admission=None) -> None:
        self.handler = handler
        self.metrics = metrics
        self.admission = admission

    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:
        result = await self.handler.classify(
            request.model_name,
            request.model_version,
            [image.data for image in request.images],
            request.top_k,
            deadline=deadline_of(context),
        )
        response = pb.ClassifyResponse(model_name=result.model_name, model_version=result.model_version)
        for image, predictions in zip(request.images, result.predictions, strict=True):
            entry = response.results.add(id=image.id)
            for p in predictions:
                entry.predictions.add(index=p.index, label=p.label, score=p.score)
        return response
