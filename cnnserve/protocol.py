"""The wire as every part of cnnserve speaks it: the one module the client, the server and the sidecar share.

- KServe v2 datatypes and their numpy dtypes, Triton's config enum, and which typed-contents field carries each;
- BYTES tensors in raw form (each element a 4-byte little-endian length and its bytes);
- cnnserve.v1 float tensors and heatmap method names;
- channel credentials (TLS, mutual TLS), the bearer token a client sends, and the message size limit.

It depends on grpc, numpy and the generated stubs only, so that the client library never imports server code
and neither the server nor the explainer sidecar imports the other.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from cnnserve._proto.cnnserve.v1 import explainer_pb2
from cnnserve._proto.inference import model_config_pb2 as mc

# A batch of 64 images of 224x224x3 as FP32 is 38.5 MB; 64 MiB leaves room for the envelope.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# KServe datatype name -> numpy dtype (little-endian, as the protocol requires).
DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
NUMPY_TO_DATATYPE: dict[np.dtype, str] = {v: k for k, v in DATATYPE_TO_NUMPY.items()}
# Triton's model config DataType -> KServe datatype name.
CONFIG_TO_DATATYPE: dict[int, str] = {
    mc.TYPE_BOOL: "BOOL",
    mc.TYPE_UINT8: "UINT8",
    mc.TYPE_UINT16: "UINT16",
    mc.TYPE_UINT32: "UINT32",
    mc.TYPE_UINT64: "UINT64",
    mc.TYPE_INT8: "INT8",
    mc.TYPE_INT16: "INT16",
    mc.TYPE_INT32: "INT32",
    mc.TYPE_INT64: "INT64",
    mc.TYPE_FP16: "FP16",
    mc.TYPE_FP32: "FP32",
    mc.TYPE_FP64: "FP64",
}
# Which InferTensorContents field carries each datatype (FP16 has none: it travels raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def serialize_bytes(values: Sequence[bytes]) -> bytes:
    """A BYTES tensor in raw form: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor; ValueError if a length runs past the end."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ValueError(f"BYTES tensor: {len(raw) - offset} trailing bytes where a 4-byte length was expected")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ValueError(f"BYTES tensor: element of {length} bytes runs past the end ({len(raw)} bytes)")
        values.append(raw[offset : offset + length])
        offset += length
    return values


# cnnserve.v1 heatmap methods: the enum on the wire <-> the name the handler and the CLI use.
HEATMAP_METHODS: dict[int, str] = {
    explainer_pb2.HEATMAP_METHOD_UNSPECIFIED: "",  # the model's default (its faithfulness score's choice)
    explainer_pb2.HEATMAP_METHOD_GRADCAM: "gradcam",
    explainer_pb2.HEATMAP_METHOD_GRAD_X_ACTIVATION: "grad_x_activation",
    explainer_pb2.HEATMAP_METHOD_GRADCAM_PLUS_PLUS: "gradcam_plus_plus",
    explainer_pb2.HEATMAP_METHOD_SCORE_CAM: "score_cam",
}
HEATMAP_METHOD_ENUMS: dict[str, int] = {name: value for value, name in HEATMAP_METHODS.items() if value}


def fields_of(source, *names: str) -> dict:
    """``{name: source.name}`` for each name: between a message and a plain object whose fields share names."""
    return {name: getattr(source, name) for name in names}


def to_float_tensor(array: np.ndarray) -> explainer_pb2.FloatTensor:
    array = np.ascontiguousarray(array, dtype="<f4")
    return explainer_pb2.FloatTensor(shape=list(array.shape), data=array.tobytes())


def from_float_tensor(tensor: explainer_pb2.FloatTensor) -> np.ndarray:
    """FloatTensor -> float32 array; the byte count must match the shape."""
    shape = [int(d) for d in tensor.shape]
    if any(d < 0 for d in shape) or len(tensor.data) != 4 * int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"FloatTensor of shape {shape} has {len(tensor.data)} bytes")
    return np.frombuffer(tensor.data, dtype="<f4").reshape(shape)


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Send and receive limits of a channel or a server."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def channel_credentials(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> grpc.ChannelCredentials:
    """Client-side TLS: trust ``ca`` (system roots if None), present ``cert``/``key`` for mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca else None,
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )


def env_token() -> str | None:
    """The client side's token: CNNSERVE_TOKEN, if set."""
    return os.environ.get("CNNSERVE_TOKEN") or None


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call on a channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details):
        extra = tuple(details.metadata or ()) + self._metadata
        return details._replace(metadata=extra) if hasattr(details, "_replace") else _Details(details, extra)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        # A ClientCallDetails of another library's making may lack the optional fields.
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def open_channel(
    address: str,
    *,
    tls_ca: Path | str | None = None,
    tls_cert: Path | str | None = None,
    tls_key: Path | str | None = None,
    token: str | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[grpc.Channel, grpc.Channel]:
    """A blocking channel to ``address``: TLS when ``tls_ca`` or ``tls_cert`` is given, and ``token`` (or
    CNNSERVE_TOKEN) sent as ``authorization: Bearer`` with every call.

    Returns (the channel to call on, the underlying channel to wait on and close).
    """
    options = channel_options(max_message_bytes)
    if tls_ca or tls_cert:
        raw = grpc.secure_channel(address, channel_credentials(tls_ca, tls_cert, tls_key), options=options)
    else:
        raw = grpc.insecure_channel(address, options=options)
    token = token or env_token()
    if not token:
        return raw, raw
    return grpc.intercept_channel(raw, _Metadata((("authorization", f"Bearer {token}"),))), raw
