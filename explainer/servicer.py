"""The sidecar's cnnserve.v1.Explainer servicer: protobuf <-> plain values around ExplainerHandler."""

from __future__ import annotations

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.explainer.handler import ExplainerHandler, ImageInput, RawPixels
from cnnserve.protocol import HEATMAP_METHOD_ENUMS, HEATMAP_METHODS, fields_of, to_float_tensor
from cnnserve.service.errors import InvalidArgument
from cnnserve.service.metrics import RequestMetrics
from cnnserve.service.rpc import Servicer, deadline_of, rpc


def method_name(value: int) -> str:
    try:
        return HEATMAP_METHODS[value]
    except KeyError:
        raise InvalidArgument(f"unknown heatmap method {value}; expected one of {sorted(HEATMAP_METHODS)}") from None


def _images(images) -> list[ImageInput]:
    out: list[ImageInput] = []
    for image in images:
        if image.WhichOneof("content") == "raw":
            r = image.raw
            out.append(RawPixels(r.data, r.height, r.width, r.channels))
        else:
            out.append(image.encoded)  # empty when unset: decode_image refuses it with INVALID_ARGUMENT
    return out


class ExplainerServicer(Servicer, pb_grpc.ExplainerServicer):
    def __init__(self, handler: ExplainerHandler, metrics: RequestMetrics) -> None:
        self.handler = handler
        self.metrics = metrics

    @rpc
    async def Heatmap(self, request: pb.HeatmapRequest, context) -> pb.HeatmapResponse:
        out = await self.handler.heatmap(
            *_model(request),
            _images(request.images),
            method=method_name(request.method),
            target=request.target_class if request.HasField("target_class") else None,
            alpha=request.overlay_alpha if request.HasField("overlay_alpha") else None,
            deadline=deadline_of(context),
            **fields_of(request, "layer", "max_channels"),
        )
        response = pb.HeatmapResponse(method=HEATMAP_METHOD_ENUMS[out.method], **_named(out, "layer", "pre_softmax"))
        if out.faithfulness:
            response.faithfulness.CopyFrom(score_message(out.faithfulness))
        for image, item in zip(request.images, out.items, strict=True):
            response.results.add(id=image.id, heatmap=to_float_tensor(item.heatmap), **fields_of(item, *HEATMAP_ITEM))
        return response

    @rpc
    async def Activations(self, request: pb.ActivationsRequest, context) -> pb.ActivationsResponse:
        out = await self.handler.activations(
            *_model(request),
            _images(request.images),
            request.layer,
            list(request.channels),
            omit_tensors=request.omit_tensors,
            deadline=deadline_of(context),
        )
        response = pb.ActivationsResponse(**_named(out, "layer", "channels", "grid_columns"))
        for image, item in zip(request.images, out.items, strict=True):
            entry = response.results.add(id=image.id, **fields_of(item, "grid_png", "dead_channels"))
            if item.activations is not None:
                entry.activations.CopyFrom(to_float_tensor(item.activations))
        return response

    @rpc
    async def FilterPatterns(self, request: pb.FilterPatternsRequest, context) -> pb.FilterPatternsResponse:
        out = await self.handler.filter_patterns(
            *_model(request),
            request.layer,
            list(request.filters),
            deadline=deadline_of(context),
            **fields_of(request, "steps", "step_size", "size", "regularized", "seed"),
        )
        response = pb.FilterPatternsResponse(**_named(out, "layer"))
        for f, png, activation, cached in out.patterns:
            response.patterns.add(filter=f, png=png, activation=activation, cached=cached)
        return response

    @rpc
    async def Faithfulness(self, request: pb.FaithfulnessRequest, context) -> pb.FaithfulnessResponse:
        out = await self.handler.faithfulness(
            *_model(request),
            _images(request.images),
            layers=list(request.layers),
            methods=[method_name(m) or "gradcam" for m in request.methods],
            mask_threshold=request.mask_threshold if request.HasField("mask_threshold") else None,
            steps=request.steps,
            deadline=deadline_of(context),
        )
        return pb.FaithfulnessResponse(
            scores=[score_message(entry) for entry in out.scores],
            **_named(out, "best_layer", "best_method", "default_heatmap_layer", "default_heatmap_method"),
            **fields_of(out, "samples", "seconds"),
        )

    @rpc
    async def ListLayers(self, request: pb.ListLayersRequest, context) -> pb.ListLayersResponse:
        out = await self.handler.list_layers(*_model(request))
        response = pb.ListLayersResponse(
            input_shape=list(out.input_shape),
            labels=list(out.labels),
            faithfulness=[score_message(entry) for entry in out.faithfulness],
            **_named(out, "default_heatmap_layer", "default_heatmap_method", "faithfulness_source"),
            **fields_of(out, "faithfulness_samples"),
        )
        for layer in out.layers:
            response.layers.add(
                output_shape=list(layer.output_shape), **fields_of(layer, "name", "class_name", "spatial")
            )
        return response


SCORE_FIELDS = frozenset(pb.FaithfulnessScore.DESCRIPTOR.fields_by_name)


def score_message(entry: dict) -> pb.FaithfulnessScore:
    """A faithfulness score (a dict of metadata.json or of the scoring) as its message; unknown keys are left out."""
    return pb.FaithfulnessScore(**{k: v for k, v in entry.items() if k in SCORE_FIELDS and v is not None})


# The HeatmapResult fields that the handler's HeatmapItem carries under the same names.
HEATMAP_ITEM = ("predicted_class", "predicted_label", "predicted_score", "target_class", "target_score", "overlay_png")


def _model(request) -> tuple[str, str]:
    return request.model_name, request.model_version


def _named(out, *names: str) -> dict:
    """The model and version an answer is for, and its other fields ``names``."""
    return fields_of(out, "model_name", "model_version", *names)
