"""Tensor conversions between the KServe v2 wire format and numpy, with precise validation.

Plain numpy in, plain numpy out: nothing here knows about gRPC. Raw contents are read with
``np.frombuffer`` (zero copy); typed contents are checked against the datatype's field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve.protocol import DATATYPE_TO_NUMPY
from cnnserve.service.errors import InvalidArgument

_MAX_ELEMENTS = 1 << 31


@dataclass(frozen=True)
class WireTensor:
    """An input tensor as it arrived, before validation: exactly one of raw / typed is set."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    typed: Sequence | None = None  # the values of the datatype's contents field


def check_shape(name: str, shape: Sequence[int], expected: Sequence[int], batching: bool) -> None:
    """Check a request shape against a model tensor's dims (without the batch dimension when ``batching``).

    -1 in ``expected`` matches any size >= 1. The batch size itself is the batcher's rule (``check_samples``).
    """
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: negative dimension in shape {list(shape)}")
    want = ([-1] if batching else []) + list(expected)
    if len(shape) != len(want) or any(w != -1 and s != w for s, w in zip(shape, want, strict=False)):
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} does not match the model's {want}")
    if 0 in shape:
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} has a zero dimension (empty batch)")


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
