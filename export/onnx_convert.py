"""SavedModel -> ONNX with tf2onnx, named and shaped per the served-model contract."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

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

    log.info("Converting %s to ONNX (opset %d)", savedmodel, opset)
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


SUBPROCESS_PARAMS = 20_000_000
"""Above this many parameters (ResNet50, Inception v3, VGG16/19, AlexNet) the conversion runs in a child
process with protobuf's pure-Python backend: with the default (upb) backend tf2onnx peaked at 24 GB on
VGG16 or was killed, and held 13 GB on ResNet50; with ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` VGG16
took about a minute at 12.5 GB. The backend is fixed when protobuf is first imported, hence a fresh process
(which also returns the conversion's memory when it ends)."""


def convert(
    savedmodel: Path,
    onnx_path: Path,
    input_shape: tuple[int, ...],
    input_name: str,
    output_name: str,
    opset: int = DEFAULT_OPSET,
    doc: dict[str, str] | None = None,
    params: int = 0,
    subprocess_conversion: bool | None = None,
) -> None:
    """Convert ``savedmodel`` and write ``onnx_path``; in a child process for models above
    ``SUBPROCESS_PARAMS`` parameters (or when ``subprocess_conversion`` says so)."""
    if subprocess_conversion is None:
        subprocess_conversion = params > SUBPROCESS_PARAMS
    if not subprocess_conversion:
        model = savedmodel_to_onnx(savedmodel, input_shape, input_name, output_name, opset=opset, doc=doc)
        onnx_path.write_bytes(model.SerializeToString())
        return
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    cmd = [
        sys.executable, "-m", "cnnserve.export.onnx_convert", str(savedmodel), str(onnx_path),
        "--shape", *map(str, input_shape), "--input", input_name, "--output", output_name,
        "--opset", str(opset), "--doc", json.dumps(doc or {}),
    ]  # fmt: skip
    log.info("Converting %s in a child process (protobuf python backend, %d parameters)", savedmodel, params)
    subprocess.run(cmd, env=env, check=True)
    if not onnx_path.exists():
        raise RuntimeError(f"The conversion process wrote no {onnx_path}")


def main(argv: list[str] | None = None) -> int:
    """``python -m cnnserve.export.onnx_convert SAVEDMODEL OUT.onnx --shape H W C``: one conversion."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("savedmodel", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--shape", type=int, nargs=3, required=True)
    parser.add_argument("--input", default="images")
    parser.add_argument("--output-name", "--output", dest="output_name", default="probabilities")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--doc", default="{}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = savedmodel_to_onnx(
        args.savedmodel, tuple(args.shape), args.input, args.output_name, args.opset, json.loads(args.doc)
    )
    args.output.write_bytes(model.SerializeToString())
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
