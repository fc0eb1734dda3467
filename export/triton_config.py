"""Triton model configuration (``config.pbtxt``) in protobuf text format, written as text.

Only the fields we use, with Triton's exact field names and enum spellings (``model_config.proto``):
``name``, ``platform``, ``max_batch_size``, ``input``/``output`` (``name``, ``data_type``, ``format``,
``dims``, ``label_filename``), ``dynamic_batching.max_queue_delay_microseconds`` and ``instance_group``.
With ``max_batch_size > 0`` the ``dims`` exclude the batch dimension, as Triton expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from cnnserve._proto.inference import model_config_pb2 as mc
from cnnserve.protocol import CONFIG_TO_DATATYPE, NUMPY_TO_DATATYPE

# KServe datatype -> the name of Triton's DataType enum value, from the one datatype table (cnnserve.protocol).
_CONFIG_NAMES = {datatype: mc.DataType.Name(value) for value, datatype in CONFIG_TO_DATATYPE.items()}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    dtype: str
    """NumPy dtype name, e.g. ``"uint8"``."""
    dims: tuple[int, ...]
    """Shape without the batch dimension; -1 for a variable dimension."""
    format: str | None = None
    """``FORMAT_NHWC`` / ``FORMAT_NCHW`` for image inputs, else None."""
    label_filename: str | None = None

    @property
    def data_type(self) -> str:
        datatype = NUMPY_TO_DATATYPE.get(np.dtype(self.dtype))
        if datatype is None:
            raise ValueError(f"No Triton data type for dtype {self.dtype!r}")
        return _CONFIG_NAMES[datatype]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    max_batch_size: int
    max_queue_delay_microseconds: int
    preferred_batch_size: int = 0
    platform: str = "onnxruntime_onnx"
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    intra_op_threads: int = 0  # Triton's onnxruntime parameter intra_op_thread_count; 0: not written


def _quote(text: str) -> str:
    # JSON string escaping is a subset of protobuf text-format escaping for printable text.
    return json.dumps(text)


def _tensor(t: TensorConfig) -> str:
    parts = [f"name: {_quote(t.name)}", f"data_type: {t.data_type}"]
    if t.format:
        parts.append(f"format: {t.format}")
    parts.append(f"dims: [ {', '.join(str(int(d)) for d in t.dims)} ]")
    if t.label_filename:
        parts.append(f"label_filename: {_quote(t.label_filename)}")
    return "  {\n" + "".join(f"    {p}\n" for p in parts) + "  }"


def render_config(cfg: ModelConfig) -> str:
    """The ``config.pbtxt`` text for ``cfg``."""
    if cfg.max_batch_size < 0:
        raise ValueError(f"max_batch_size must be >= 0. Received: {cfg.max_batch_size}")
    lines = [
        f"name: {_quote(cfg.name)}",
        f"platform: {_quote(cfg.platform)}",
        f"max_batch_size: {int(cfg.max_batch_size)}",
        "input [\n" + ",\n".join(_tensor(t) for t in cfg.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(t) for t in cfg.outputs) + "\n]",
    ]
    if cfg.max_batch_size > 0:
        preferred = f"  preferred_batch_size: [ {int(cfg.preferred_batch_size)} ]\n" if cfg.preferred_batch_size else ""
        lines.append(
            f"dynamic_batching {{\n{preferred}  max_queue_delay_microseconds: {int(cfg.max_queue_delay_microseconds)}\n}}"
        )
    lines.append(
        f"instance_group [\n  {{\n    count: {int(cfg.instance_count)}\n    kind: {cfg.instance_kind}\n  }}\n]"
    )
    if cfg.intra_op_threads:
        threads = _quote(str(int(cfg.intra_op_threads)))
        lines.append(f'parameters {{\n  key: "intra_op_thread_count"\n  value: {{ string_value: {threads} }}\n}}')
    return "\n".join(lines) + "\n"
