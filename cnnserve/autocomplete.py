"""A model configuration completed from the ONNX graph, as Triton's auto-complete does for ONNX models.

A model folder holding only ``VERSION/model.onnx`` (no ``config.pbtxt``), or a ``config.pbtxt`` that names
neither inputs nor outputs, is served with a config read from the newest version's graph:

- every graph input and output with its datatype and dims (a symbolic or unknown dimension is -1);
- when the first dimension of every input and output is dynamic, it is the batch dimension:
  ``max_batch_size`` is the server's ``auto_complete_max_batch_size`` (default 4, Triton's
  ``default-max-batch-size``) and dynamic batching is on (Triton's ``dynamic_batching {}``: no queue delay);
- otherwise (a graph exported with a fixed batch of 1, say) ``max_batch_size`` is 0 and the dims are the
  graph's full shape: the model is served without batching, one request per run;
- ``labels.txt`` in the model folder becomes the label file of a single output.

A graph the server cannot describe (a tensor type with no KServe datatype, a scalar, a file onnxruntime
cannot load) is refused with the reason, which RepositoryIndex reports; other models are not affected.
"""

from __future__ import annotations

from pathlib import Path

from cnnserve._proto.inference import model_config_pb2 as mc
from cnnserve.protocol import CONFIG_TO_DATATYPE

DEFAULT_MAX_BATCH_SIZE = 4  # Triton's --backend-config=onnxruntime,default-max-batch-size default

# onnxruntime type name -> KServe datatype name.
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
_DATATYPE_TO_CONFIG = {v: k for k, v in CONFIG_TO_DATATYPE.items()}
LABEL_FILE = "labels.txt"


class GraphNotDescribable(ValueError):
    """The graph has a tensor that a model configuration cannot describe."""


def graph_signature(model_file: Path) -> tuple[list, list]:
    """The graph's (inputs, outputs) as onnxruntime reads them: objects with ``name``, ``type``, ``shape``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for files that are not ONNX
        raise GraphNotDescribable(f"{model_file}: onnxruntime cannot read the graph: {exc}") from exc
    return list(session.get_inputs()), list(session.get_outputs())


def _dims(node, batching: bool) -> list[int]:
    shape = list(node.shape)[1:] if batching else list(node.shape)
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def _datatype(node, kind: str, model_file: Path) -> int:
    datatype = ONNX_TO_DATATYPE.get(node.type)
    if datatype is None:
        raise GraphNotDescribable(
            f"{model_file}: graph {kind} {node.name!r} has type {node.type}, which no KServe datatype describes"
        )
    if not list(node.shape):
        raise GraphNotDescribable(f"{model_file}: graph {kind} {node.name!r} is a scalar; a tensor needs dims")
    return _DATATYPE_TO_CONFIG[datatype]


def _dynamic_first(node) -> bool:
    shape = list(node.shape)
    return bool(shape) and not (isinstance(shape[0], int) and shape[0] > 0)


def complete_config(
    config: mc.ModelConfig, folder: Path, model_file: Path, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> mc.ModelConfig:
    """Fill ``config``'s missing inputs, outputs and batching from ``model_file``'s graph (in place; returned)."""
    inputs, outputs = graph_signature(model_file)
    if not inputs or not outputs:
        raise GraphNotDescribable(f"{model_file}: the graph has {len(inputs)} inputs and {len(outputs)} outputs")
    types = {n.name: _datatype(n, "input", model_file) for n in inputs}
    types.update({n.name: _datatype(n, "output", model_file) for n in outputs})
    complete_batching = not config.input and not config.output and config.max_batch_size == 0
    if complete_batching and max_batch_size > 0 and all(_dynamic_first(n) for n in (*inputs, *outputs)):
        config.max_batch_size = max_batch_size
        config.dynamic_batching.SetInParent()
    batching = config.max_batch_size > 0
    if not config.input:
        for node in inputs:
            config.input.add(name=node.name, data_type=types[node.name], dims=_dims(node, batching))
    if not config.output:
        for node in outputs:
            out = config.output.add(name=node.name, data_type=types[node.name], dims=_dims(node, batching))
            if len(outputs) == 1 and (folder / LABEL_FILE).is_file():
                out.label_filename = LABEL_FILE
    if not config.platform and not config.backend:
        config.platform = "onnxruntime_onnx"
    return config
