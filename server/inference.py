"""The inference handler: validated plain requests in, numpy results out. Knows nothing of gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnserve.server.model_manager import ModelManager, ServedVersion
from cnnserve.server.tensors import WireTensor, check_shape, decode_tensor
from cnnserve.server.topk import classification_tensor
from cnnserve.service.errors import InvalidArgument


@dataclass(frozen=True)
class RequestedOutput:
    """An output the caller asked for; ``classification`` (k, at least 1) asks for its top k classes instead."""

    name: str
    classification: int | None = None


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: Sequence[WireTensor] = ()
    outputs: Sequence[RequestedOutput] = ()


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # KServe datatype; "BYTES" for classification results
    data: np.ndarray


@dataclass
class InferResult:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor] = field(default_factory=list)


class InferenceHandler:
    """Validates a request against its model, queues it on the model's batcher, shapes the answer."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models

    def prepare(self, request: InferRequest) -> tuple[ServedVersion, dict[str, np.ndarray]]:
        """Everything that can be checked before queueing: a bad request never reaches its neighbours.

        The batch size (1 to max_batch_size, the same for every input) is checked by the batcher's ``submit``,
        before the request enters the queue.
        """
        served = self.models.get(request.model_name, request.model_version)
        spec = served.spec
        expected = {t.name: t for t in spec.inputs}
        arrays: dict[str, np.ndarray] = {}
        for tensor in request.inputs:
            model_input = expected.get(tensor.name)
            if model_input is None:
                raise InvalidArgument(
                    f"unexpected input {tensor.name!r} for model {spec.name!r}; expected {sorted(expected)}"
                )
            if tensor.name in arrays:
                raise InvalidArgument(f"input {tensor.name!r} appears more than once")
            if tensor.datatype != model_input.datatype:
                raise InvalidArgument(
                    f"input {tensor.name!r}: datatype {tensor.datatype!r} does not match the model's "
                    f"{model_input.datatype!r}"
                )
            check_shape(tensor.name, tensor.shape, model_input.dims, spec.batching)
            arrays[tensor.name] = decode_tensor(tensor)
        missing = sorted(set(expected) - set(arrays))
        if missing:
            raise InvalidArgument(f"model {spec.name!r} expects input(s) {missing}, not given")
        outputs = {t.name for t in spec.outputs}
        for out in request.outputs:
            if out.name not in outputs:
                raise InvalidArgument(
                    f"unexpected output {out.name!r} for model {spec.name!r}; outputs are {sorted(outputs)}"
                )
            if out.classification is not None and out.classification < 1:
                raise InvalidArgument(f"output {out.name!r}: classification must be >= 1, got {out.classification}")
        return served, arrays

    async def infer(self, request: InferRequest, *, deadline: float | None = None) -> InferResult:
        served, arrays = self.prepare(request)
        results = await served.batcher.submit(arrays, deadline=deadline)
        return self.shape_result(request, served, results)

    def shape_result(self, request: InferRequest, served: ServedVersion, results: dict[str, np.ndarray]) -> InferResult:
        spec = served.spec
        wanted = request.outputs or [RequestedOutput(t.name) for t in spec.outputs]
        by_name = {t.name: t for t in spec.outputs}
        result = InferResult(spec.name, spec.version, request.id)
        for out in wanted:
            data = results[out.name]
            if out.classification is None:
                result.outputs.append(OutputTensor(out.name, by_name[out.name].datatype, data))
            else:
                data = classification_tensor(data, out.classification, spec.labels)
                result.outputs.append(OutputTensor(out.name, "BYTES", data))
        return result
