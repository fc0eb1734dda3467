"""SavedModel -> ONNX with tf2onnx, named and shaped per the served-model contract."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # tf2onnx 1.17 refuses 19+
BATCH_DIM = "batch"


def savedmodel_to_onnx(
    savedmodel: Path,
    input_shape: tuple[int, ...],
    input_name: str,
    output_name: str,
    opset: int = DEFAULT_OPSET,
    doc: dict[str, str] | None = None,
):
    """Convert the ``serving_default`` signature of ``savedmodel`` into a checked ``onnx.ModelProto``.

    The ONNX graph takes uint8 ``input_name`` [batch, *input_shape] and returns float32 ``output_name``
    [batch, K]; the batch dimension is the symbolic ``"batch"``. ``doc`` goes into metadata_props.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(savedmodel))  # keep a reference: it owns the variables
    signature = loaded.signatures["serving_default"]
    spec = tf.TensorSpec((None, *input_shape), tf.uint8, name=input_name)

    @tf.function(input_signature=[spec])
    def serve(images):
        return {output_name: signature(**{input_name: images})[output_name]}

    logger.info("Converting %s to ONNX (opset %d)", savedmodel, opset)
    model, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)

    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [input_name] or outputs != [output_name]:
        raise RuntimeError(
            f"Converted ONNX graph has inputs {inputs} and outputs {outputs}; "
            f"expected [{input_name!r}] and [{output_name!r}]"
        )
    for value in (model.graph.input[0], model.graph.output[0]):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.Clear()
        dim0.dim_param = BATCH_DIM
    for key, val in (doc or {}).items():
        model.metadata_props.add(key=key, value=val)
    onnx.checker.check_model(model, full_check=True)
    return model
