"""Pre-serialised ModelInfer requests built from the server's own ModelMetadata (HTTP ones: ``http.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from cnnserve._proto.inference import grpc_service_pb2 as pb
from cnnserve._proto.inference import grpc_service_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
DIGITS = Path(__file__).resolve().parents[2] / "data" / "mnist-8k.npz"
NUMPY = {
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True)
class InputSpec:
    """One model input as ModelMetadata describes it; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def model_inputs(channel: grpc.Channel, model: str, version: str = "", timeout: float = 10.0) -> list[InputSpec]:
    """Ask the server for the model's inputs (name, datatype, shape)."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), timeout=timeout)
    return [InputSpec(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in meta.inputs]


def parse_inputs(text: str) -> list[InputSpec]:
    """``NAME:DATATYPE:D0xD1x...`` (comma-separated for several), for servers without ModelMetadata."""
    specs = []
    for part in text.split(","):
        name, datatype, dims = part.split(":")
        specs.append(InputSpec(name, datatype.upper(), tuple(int(d) for d in dims.lower().split("x"))))
    return specs


def _sample_data(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """MNIST digits when the input is a 28x28 grey image and the bundled data is there, else random values."""
    dtype = NUMPY.get(spec.datatype)
    if dtype is None:
        raise ValueError(f"input {spec.name!r}: datatype {spec.datatype} is not supported by the bench tool")
    if spec.datatype == "UINT8" and shape[1:] in ((28, 28, 1), (28, 28)) and DIGITS.is_file():
        digits = np.load(DIGITS)["x"]
        picked = digits[rng.integers(0, len(digits), size=shape[0])]
        return picked.reshape(shape)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 255 if spec.datatype == "UINT8" else 100, size=shape).astype(dtype)
    return rng.random(size=shape, dtype=np.float32).astype(dtype)


def sample_tensors(
    inputs: list[InputSpec], images_per_request: int, *, variants: int = 8, seed: int = 0
) -> list[list[tuple[InputSpec, np.ndarray]]]:
    """``variants`` sets of input arrays of ``images_per_request`` samples (the same for every protocol).

    A leading -1 in a shape is the batch dimension; other -1 dimensions become 1.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(variants):
        tensors = []
        for spec in inputs:
            dims = list(spec.shape)
            if dims and dims[0] == -1:
                dims[0] = images_per_request
            shape = tuple(d if d > 0 else 1 for d in dims)
            tensors.append((spec, np.ascontiguousarray(_sample_data(spec, shape, rng))))
        out.append(tensors)
    return out


def build_requests(
    model: str,
    inputs: list[InputSpec],
    images_per_request: int,
    *,
    version: str = "",
    variants: int = 8,
    seed: int = 0,
) -> list[bytes]:
    """``variants`` different serialised ModelInfer requests (raw_input_contents) of ``sample_tensors``."""
    out = []
    for tensors in sample_tensors(inputs, images_per_request, variants=variants, seed=seed):
        request = pb.ModelInferRequest(model_name=model, model_version=version)
        for spec, data in tensors:
            request.inputs.add(name=spec.name, datatype=spec.datatype, shape=data.shape)
            request.raw_input_contents.append(data.tobytes())
        out.append(request.SerializeToString())
    return out
