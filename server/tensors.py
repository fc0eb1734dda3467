"""Tensor conversions between the KServe v2 wire format and numpy, with precise validation.

Plain numpy in, plain numpy out: nothing here knows about gRPC. Raw contents are read with
``np.frombuffer`` (zero copy); typed contents are checked against the datatype's field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve._proto.inference import model_config_pb2 as mc
from cnnserve.server.errors import InvalidArgument

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
ONNX_TO_DATATYPE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}
# Which InferTensorContents field carries each datatype.
CONTENTS_FIELD = {
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
_MAX_ELEMENTS = 1 << 31


@dataclass(frozen=True)
class WireTensor:
    """An input tensor as it arrived, before validation: exactly one of raw / typed is set."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    typed: Sequence | None = None  # the values of the datatype's contents field


def check_shape(name: str, shape: Sequence[int], expected: Sequence[int], max_batch_size: int) -> int:
    """Check a request shape against a model tensor; return the batch size (1 for non-batching models).

    ``expected`` excludes the batch dimension when ``max_batch_size > 0``; -1 in it matches any size >= 1.
    """
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: negative dimension in shape {list(shape)}")
    batching = max_batch_size > 0
    want = ([-1] if batching else []) + list(expected)
    if len(shape) != len(want) or any(w != -1 and s != w for s, w in zip(shape, want, strict=False)):
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} does not match the model's {want}")
    if any(d == 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} has a zero dimension (empty batch)")
    if not batching:
        return 1
    if shape[0] > max_batch_size:
        raise InvalidArgument(
            f"input {name!r}: batch size {shape[0]} exceeds the model's max_batch_size {max_batch_size}"
        )
    return shape[0]


def decode_tensor(t: WireTensor) -> np.ndarray:
    """Turn a validated-shape wire tensor into a numpy array of its datatype (raw bytes: zero copy)."""
    dtype = DATATYPE_TO_NUMPY.get(t.datatype)
    if dtype is None:
        raise InvalidArgument(f"input {t.name!r}: unsupported datatype {t.datatype!r}")
    count = math.prod(t.shape)  # plain ints: np.prod costs microseconds per request
    if count > _MAX_ELEMENTS:
        raise InvalidArgument(f"input {t.name!r}: shape {list(t.shape)} has too many elements")
    if t.raw is not None:
        expected = count * dtype.itemsize
        if len(t.raw) != expected:
            raise InvalidArgument(
                f"input {t.name!r}: raw content has {len(t.raw)} bytes, expected {expected} "
                f"for shape {list(t.shape)} and datatype {t.datatype}"
            )
        return np.frombuffer(t.raw, dtype=dtype).reshape(t.shape)
    if t.typed is None:
        raise InvalidArgument(f"input {t.name!r}: no data (neither raw_input_contents nor contents)")
    if t.datatype == "FP16":
        raise InvalidArgument(f"input {t.name!r}: FP16 data must be sent in raw_input_contents")
    if len(t.typed) != count:
        raise InvalidArgument(
            f"input {t.name!r}: contents has {len(t.typed)} elements, expected {count} for shape {list(t.shape)}"
        )
    values = np.asarray(t.typed)
    if dtype.kind in "ui" and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise InvalidArgument(f"input {t.name!r}: contents out of range for {t.datatype}")
    return values.astype(dtype, copy=False).reshape(t.shape)


def serialize_bytes(values: Sequence[bytes]) -> bytes:
    """BYTES tensors in raw form: each element as a 4-byte little-endian length and its bytes."""
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def classification(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """Triton's classification extension: the top k of each row as b"score:index:label", best first."""
    classes = probabilities.shape[-1]
    if k > classes:
        raise InvalidArgument(f"classification k={k} is larger than the model's {classes} classes")
    flat = probabilities.reshape(-1, classes)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    rows = []
    for row, idx in zip(flat, top, strict=True):
        for i in idx:
            label = labels[i] if i < len(labels) else ""
            rows.append(f"{row[i]:f}:{i}:{label}".encode() if label else f"{row[i]:f}:{i}".encode())
    return np.array(rows, dtype=object).reshape(*probabilities.shape[:-1], k)
