"""The image handler (Classify): encoded images -> model input -> top-k labels. No gRPC here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np

from cnnserve.server.model_manager import ModelManager
from cnnserve.server.topk import Prediction
from cnnserve.server.topk import top_k as top_k_predictions
from cnnserve.service.errors import FailedPrecondition, InvalidArgument
from cnnserve.service.imaging import ImageDecoding, decode_image

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ClassifyResult:
    model_name: str
    model_version: str
    predictions: list[list[Prediction]]  # per image, best first
    inputs: np.ndarray | None = None  # the decoded batch [N, H, W, C] exactly as the model saw it


class ImageHandler:
    """Decodes with the model's metadata.json preprocessing and queues on the model's batcher."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models

    async def classify(
        self, model: str, version: str, images: list[bytes], top_k: int = 0, *, deadline: float | None = None
    ) -> ClassifyResult:
        served = self.models.get(model, version)
        spec = served.spec
        if not images:
            raise InvalidArgument("no images in the request")
        served.batcher.check_samples(len(images))  # before decoding any of them
        if top_k < 0:
            raise InvalidArgument(f"top_k must be >= 0, got {top_k}")
        if len(spec.inputs) != 1 or len(spec.outputs) != 1 or spec.inputs[0].datatype != "UINT8":
            raise FailedPrecondition(f"model {model!r} is not a single-input UINT8 image classifier")
        pre = ImageDecoding.from_metadata(model, spec.metadata)
        batch = await asyncio.to_thread(_decode_all, images, pre)
        # Decoding yielded to the loop: a reload may have swapped versions meanwhile. Queue on the version
        # serving now (its input shape is re-checked), so a reload never fails a request in flight.
        served = self.models.get(model, version)
        if served.spec is not spec:
            spec = served.spec
            pre = ImageDecoding.from_metadata(model, spec.metadata)
            if batch.shape[1:] != (pre.height, pre.width, pre.channels):
                batch = await asyncio.to_thread(_decode_all, images, pre)
        # A model without a batch dimension takes its one image as it is (check_samples allowed one), or as a
        # batch of one where its graph has a fixed batch of 1 (dims [1, H, W, C]).
        fixed_batch = len(spec.inputs[0].dims) == 4
        inputs = {spec.inputs[0].name: batch if spec.batching or fixed_batch else batch[0]}
        results = await served.batcher.submit(inputs, deadline=deadline)
        probabilities = results[spec.outputs[0].name]
        k = min(top_k or DEFAULT_TOP_K, probabilities.shape[-1])
        rows = top_k_predictions(probabilities, k, spec.labels)
        # The image API always names a class: its index where the model has no label for it.
        named = [[p if p.label else replace(p, label=str(p.index)) for p in row] for row in rows]
        return ClassifyResult(spec.name, spec.version, named, batch)


def _decode_all(images: list[bytes], pre: ImageDecoding) -> np.ndarray:
    return np.stack([decode_image(data, pre, index=i) for i, data in enumerate(images)])
