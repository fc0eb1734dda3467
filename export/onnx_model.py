"""``cnnserve export --onnx PATH --name NAME``: an ONNX image classifier exported elsewhere (PyTorch, say), installed
in the Triton-layout repository behind a small preprocessing prefix.

The common case is PyTorch's export: float32 NCHW input, mean/std normalisation done outside the graph, logits
out. Such a model is installed **with an ONNX prefix** (uint8 NHWC ``images`` -> cast -> optional RGB->BGR ->
``(x * scale - mean) / std`` -> NCHW when the model is NCHW -> the model's input), and with ``--softmax`` a
Softmax named ``probabilities`` after its output. Why a prefix rather than the model as it is: every served
model then keeps the project's contract, raw uint8 pixels in with the preprocessing inside the graph, so
``Classify`` (which decodes PNG/JPEG into uint8 NHWC), the KServe v2 UINT8 tensors, the benchmarks and the
clients work unchanged, and no client can normalise differently from training. The prefix is a handful of
elementwise nodes; the model's own nodes are untouched. A model that already takes uint8 NHWC is installed as
it is. What the client must send is the served input, written to metadata.json and shown by ModelMetadata.

Checks before anything is written into the repository: ``onnx.checker`` (full check) on the file and on the
served graph, one image input of rank 4 with fixed H, W, C, one class-score output [N, K], labels of the right
count, and a trial run: onnxruntime runs the served graph on generated images and must reproduce the original
graph run on the same images with the same preprocessing in NumPy (max |diff| <= 1e-4).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cnnserve.export.own_model import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_DELAY_US,
    ExportInputError,
    Preprocessing,
    checked_name,
    now_utc,
    read_labels,
    staged_model,
)
from cnnserve.export.triton_config import ModelConfig, TensorConfig, render_config
from cnnserve.repository import PARITY_MAX_ABS_DIFF, file_sha256

log = logging.getLogger(__name__)

SERVED_INPUT = "images"
SOFTMAX_OUTPUT = "probabilities"
PREFIX = "cnnserve_pre/"
TRIAL_SAMPLES = 8
LAYOUTS = ("NCHW", "NHWC")


class TrialRunError(RuntimeError):
    """The served graph does not run, or does not reproduce the original model with its preprocessing."""


def load_checked(path: str | Path):
    """The ONNX model at ``path`` after ``onnx.checker``; ExportInputError for anything else."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportInputError(f"--onnx {path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise ExportInputError(f"--onnx {path} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.output:
        raise ExportInputError(f"--onnx {path} is not an ONNX model (no graph)")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportInputError(f"--onnx {path}: onnx.checker refuses the model: {exc}") from None
    return model


def _dims(value) -> list[int | str | None]:
    tt = value.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def _is_fixed(d) -> bool:
    return isinstance(d, int) and d > 0


def describe(model, layout: str | None) -> dict:
    """The image input and the class-score output the model must have, read from its graph."""
    from onnx import TensorProto

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportInputError(
            f"the graph has {len(inputs)} inputs {[i.name for i in inputs]}; an image classifier takes one image tensor"
        )
    image = inputs[0]
    if not image.type.HasField("tensor_type") or not image.type.tensor_type.HasField("shape"):
        raise ExportInputError(f"input {image.name!r} is not a tensor of known rank: not an image tensor")
    dims, elem = _dims(image), image.type.tensor_type.elem_type
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    if elem not in (*floats, TensorProto.UINT8):
        raise ExportInputError(
            f"input {image.name!r} is {TensorProto.DataType.Name(elem)}: not an image tensor (float or uint8 pixels)"
        )
    if len(dims) != 4:
        raise ExportInputError(
            f"input {image.name!r} has shape {dims}: not an image tensor [N, C, H, W] or [N, H, W, C]"
        )
    if layout is None:
        first, last = dims[1] in (1, 3), dims[3] in (1, 3)
        if first == last:
            raise ExportInputError(f"input {image.name!r} has shape {dims}: say which layout it is with --layout")
        layout = "NCHW" if first else "NHWC"
    if layout not in LAYOUTS:
        raise ExportInputError(f"--layout must be one of {list(LAYOUTS)}. Received: {layout!r}")
    h, w, c = (dims[2], dims[3], dims[1]) if layout == "NCHW" else (dims[1], dims[2], dims[3])
    if not all(_is_fixed(d) for d in (h, w, c)) or c not in (1, 3):
        raise ExportInputError(
            f"input {image.name!r} has shape {dims} ({layout}): an image tensor needs fixed H and W and 1 or 3 channels"
        )
    if elem == TensorProto.UINT8 and layout != "NHWC":
        raise ExportInputError(f"input {image.name!r} is uint8 {layout}; uint8 images are served NHWC only")
    batch = dims[0]
    if _is_fixed(batch) and batch != 1:
        raise ExportInputError(f"input {image.name!r} has a fixed batch of {batch}; export a dynamic batch or 1")
    if len(graph.output) != 1:
        raise ExportInputError(
            f"the graph has {len(graph.output)} outputs; Classify needs one class-score output [N, K]"
        )
    output = graph.output[0]
    out_dims = _dims(output)
    out_elem = output.type.tensor_type.elem_type
    if len(out_dims) != 2 or not _is_fixed(out_dims[1]) or out_elem not in floats:
        raise ExportInputError(
            f"output {output.name!r} has shape {out_dims} ({TensorProto.DataType.Name(out_elem)}): "
            "not class scores [N, K] of floats"
        )
    return {
        "input": image.name,
        "input_shape": dims,
        "input_elem": elem,
        "layout": layout,
        "height": int(h),
        "width": int(w),
        "channels": int(c),
        "batching": not _is_fixed(batch),
        "batch_param": batch if isinstance(batch, str) else "batch",
        "output": output.name,
        "output_shape": out_dims,
        "output_elem": out_elem,
        "classes": int(out_dims[1]),
    }


def _free_name(graph, wanted: str) -> str:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    names.update(t for node in graph.node for t in (*node.input, *node.output))
    name, n = wanted, 1
    while name in names:
        name, n = f"{wanted}_{n}", n + 1
    return name


def served_graph(model, info: dict, pre: Preprocessing, softmax: bool):
    """A copy of ``model`` taking uint8 NHWC (the prefix) and, with ``softmax``, returning probabilities."""
    from onnx import TensorProto, helper, numpy_helper

    served = type(model)()
    served.CopyFrom(model)
    graph = served.graph
    lead = [info["batch_param"] if info["batching"] else 1]
    h, w, c = info["height"], info["width"], info["channels"]
    if info["input_elem"] != TensorProto.UINT8:
        input_name = _free_name(graph, SERVED_INPUT)
        mean, std = pre.per_channel(c)
        consts = {"scale": np.asarray(pre.scale, np.float32), "mean": mean, "std": std}
        nodes = [helper.make_node("Cast", [input_name], [PREFIX + "pixels"], to=TensorProto.FLOAT)]
        current = PREFIX + "pixels"

        def step(op, *inputs, **attrs):
            nonlocal current
            out = PREFIX + f"{op.lower()}{len(nodes)}"
            nodes.append(helper.make_node(op, [current, *inputs], [out], **attrs))
            current = out

        if pre.bgr:
            consts["bgr"] = np.asarray([2, 1, 0], np.int64)
            step("Gather", PREFIX + "bgr", axis=3)
        step("Mul", PREFIX + "scale")
        step("Sub", PREFIX + "mean")
        step("Div", PREFIX + "std")
        if info["layout"] == "NCHW":
            step("Transpose", perm=[0, 3, 1, 2])
        if info["input_elem"] != TensorProto.FLOAT:
            step("Cast", to=info["input_elem"])
        nodes[-1].output[0] = info["input"]  # the last prefix node feeds the model's own input
        graph.initializer.extend(numpy_helper.from_array(v, PREFIX + k) for k, v in consts.items())
        body = list(graph.node)
        del graph.node[:]
        graph.node.extend([*nodes, *body])
        others = [i for i in graph.input if i.name != info["input"]]
        del graph.input[:]
        graph.input.append(helper.make_tensor_value_info(input_name, TensorProto.UINT8, [*lead, h, w, c]))
        graph.input.extend(others)
    if softmax:
        name = _free_name(graph, SOFTMAX_OUTPUT)
        graph.node.append(helper.make_node("Softmax", [info["output"]], [name], axis=-1))
        out = helper.make_tensor_value_info(name, info["output_elem"], [lead[0], info["classes"]])
        del graph.output[:]
        graph.output.append(out)
    return served


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def trial_run(original, served, info: dict, pre: Preprocessing, softmax: bool, samples: int = TRIAL_SAMPLES) -> dict:
    """onnxruntime on the served graph against the original graph fed the NumPy preprocessing, on generated images."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (samples, info["height"], info["width"], info["channels"]), dtype=np.uint8)
    try:
        served_session = ort.InferenceSession(served.SerializeToString(), providers=["CPUExecutionProvider"])
        original_session = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
        step = 2 if info["batching"] else 1
        in_name = served_session.get_inputs()[0].name
        got = np.concatenate([served_session.run(None, {in_name: x[i : i + step]})[0] for i in range(0, samples, step)])
        if info["input_elem"] == TensorProto.UINT8:
            fed = x
        else:
            fed = pre.apply(x)
            if info["layout"] == "NCHW":
                fed = fed.transpose(0, 3, 1, 2)
            fed = np.ascontiguousarray(fed.astype(helper.tensor_dtype_to_np_dtype(info["input_elem"])))
        ref = np.concatenate(
            [original_session.run(None, {info["input"]: fed[i : i + step]})[0] for i in range(0, samples, step)]
        )
    except Exception as exc:  # onnxruntime's own exception types
        raise TrialRunError(f"trial run on {samples} generated images failed: {exc}") from exc
    ref = _softmax(ref.astype(np.float64)) if softmax else ref.astype(np.float64)
    diff = float(np.abs(got.astype(np.float64) - ref).max()) if np.isfinite(got).all() else float("inf")
    if got.shape != ref.shape or not diff <= PARITY_MAX_ABS_DIFF:
        raise TrialRunError(
            f"trial run on {samples} generated images: the served graph gives shape {got.shape}, max |diff| {diff:.3g} "
            f"against the original graph with the same preprocessing (need {ref.shape}, <= {PARITY_MAX_ABS_DIFF:g})"
        )
    return {
        "samples": samples,
        "images": f"{samples} generated images (uniform random uint8, seed 0)",
        "max_abs_diff": diff,
        "tolerance": PARITY_MAX_ABS_DIFF,
        "against": "the original graph (onnxruntime) fed the same preprocessing computed in NumPy",
        "onnxruntime": ort.__version__,
    }


def _metadata(name, version, source: Path, info, served, pre, labels, trial, max_batch_size, softmax, vdir) -> dict:
    import onnx
    from onnx import TensorProto, helper

    def datatype(elem):
        return {"float32": "FP32", "float16": "FP16", "float64": "FP64", "uint8": "UINT8"}[
            np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
        ]

    h, w, c = info["height"], info["width"], info["channels"]
    lead = -1 if info["batching"] else 1
    out = served.graph.output[0]
    prefixed = info["input_elem"] != TensorProto.UINT8
    return {
        "schema_version": 1,
        "name": name,
        "version": version,
        "description": f"ONNX model {source.name}, exported by `cnnserve export --onnx`",
        "source": {
            "kind": "onnx",
            "path": str(source),
            "sha256": file_sha256(source),
            "input": {
                "name": info["input"],
                "datatype": datatype(info["input_elem"]),
                "shape": info["input_shape"],
                "layout": info["layout"],
            },
            "output": {"name": info["output"], "shape": info["output_shape"]},
        },  # fmt: skip
        "input": {"name": served.graph.input[0].name, "datatype": "UINT8", "shape": [lead, h, w, c], "layout": "NHWC"},
        "output": {
            "name": out.name,
            "datatype": datatype(info["output_elem"]),
            "shape": [lead, info["classes"]],
            "scores": "probabilities" if softmax else "the model's own output (softmax not added)",
        },
        "client_sends": f"UINT8 [{'N' if info['batching'] else 1}, {h}, {w}, {c}] raw pixels "
        f"({'RGB' if c == 3 else 'grey'}, 0-255, NHWC); the graph normalises",
        "labels": labels,
        "preprocessing": {
            "height": h,
            "width": w,
            "channels": c,
            "color_mode": "rgb" if c == 3 else "grayscale",
            "resize": "bilinear",
            "value_range": [0, 255],
            "in_graph": True,
            "prefix": "cnnserve ONNX prefix nodes (cnnserve_pre/*)" if prefixed else "none: the model takes uint8",
            **(pre.as_metadata(c) if prefixed else {}),
            "layout_in_model": info["layout"],
        },
        "layers": {},
        "explainable": {"available": False, "reason": "ONNX-only model: no model.keras beside model.onnx"},
        "trial": trial,
        "batching": {
            "max_batch_size": max_batch_size if info["batching"] else 0,
            "max_queue_delay_microseconds": DEFAULT_MAX_QUEUE_DELAY_US if info["batching"] else 0,
        },
        "hashes": {"onnx_sha256": file_sha256(vdir / "model.onnx"), "source_sha256": file_sha256(source)},
        "export": {"kind": "onnx", "onnx": onnx.__version__, "created_utc": now_utc()},
    }


def export_onnx(
    path: str | Path,
    name: str,
    repository: str | Path = "models",
    version: int = 1,
    labels: str | Path | None = None,
    layout: str | None = None,
    scale: float | None = None,
    mean: str | None = None,
    std: str | None = None,
    bgr: bool = False,
    softmax: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> Path:
    """Check the ONNX model at ``path``, put the uint8 prefix (and ``softmax``) on it, trial-run it, and install it as
    ``<repository>/<name>/<version>/``; returns that folder. Nothing is installed when a check fails."""
    import onnx

    name = checked_name(name)
    if max_batch_size < 1:
        raise ExportInputError(f"--max-batch-size must be >= 1. Received: {max_batch_size}")
    source = Path(path)
    original = load_checked(source)
    info = describe(original, layout)
    pre = Preprocessing.from_options(scale, mean, std, bgr)
    from onnx import TensorProto

    if info["input_elem"] == TensorProto.UINT8 and (len(pre.defaults) < 3 or bgr):
        raise ExportInputError(
            f"input {info['input']!r} already takes uint8 pixels: its preprocessing is in the graph, so --scale, "
            "--mean, --std and --bgr do not apply"
        )
    pre.per_channel(info["channels"])  # --mean/--std lengths, before any work
    label_list = read_labels(labels, info["classes"])
    served = served_graph(original, info, pre, softmax)
    try:
        onnx.checker.check_model(served, full_check=True)
    except Exception as exc:
        raise TrialRunError(f"the served graph (prefix + model) fails onnx.checker: {exc}") from exc
    trial = trial_run(original, served, info, pre, softmax)
    batch = max_batch_size if info["batching"] else 0
    lead = () if info["batching"] else (1,)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(info["output_elem"])).name
    config = ModelConfig(
        name=name,
        inputs=(TensorConfig(served.graph.input[0].name, "uint8", (*lead, info["height"], info["width"],
                             info["channels"]), format="FORMAT_NHWC"),),
        outputs=(TensorConfig(served.graph.output[0].name, dtype, (*lead, info["classes"]), label_filename="labels.txt"),),
        max_batch_size=batch,
        max_queue_delay_microseconds=DEFAULT_MAX_QUEUE_DELAY_US,
    )  # fmt: skip
    with staged_model(repository, name, version) as (staged, vdir):
        onnx.save(served, str(vdir / "model.onnx"))
        meta = _metadata(name, version, source, info, served, pre, label_list, trial, batch, softmax, vdir)
        (vdir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (staged / "labels.txt").write_text("".join(f"{label}\n" for label in label_list))
        (staged / "config.pbtxt").write_text(render_config(config))
    target = Path(repository) / name / str(version)
    log.info("Exported ONNX model %s as %s version %d -> %s", source, name, version, target)
    return target
