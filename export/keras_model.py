"""``cnnserve export --keras PATH --name NAME``: your own Keras image classifier, served under the project's contract.

PATH is a ``.keras`` file (Sequential or functional, nested base models included) or a SavedModel directory.
The served model is a small Keras model built around yours, with built-in layers only:

    images (uint8 [N, H, W, C]) -> Rescaling "preprocess" (per channel (x * scale - mean) / std, folded into
    x * (scale / std) - mean / std) -> Dense "rgb_to_bgr" (a fixed channel permutation, with --bgr only)
    -> your model (a nested layer, unchanged) -> Softmax "probabilities" (with --softmax only)

It is saved as ``model.keras`` beside ``model.onnx`` (so the explainer runs Grad-CAM on your layers, with the
Grad-CAM layer found by the explainer's rules and recorded in metadata.json as ``layers.cam``) and as a
SavedModel, which tf2onnx converts. Parity is proven as for our variants: onnxruntime against the SavedModel,
top-1 100 % and max |diff| <= 1e-4 on ``--samples`` (PNG/JPEG folder or uint8 .npy, topped up to 256 with
generated images) or on 256 generated images; nothing is installed when it fails.

A SavedModel directory is loaded with ``keras.layers.TFSMLayer``: it serves and has parity like a .keras model,
but it has no Keras layers to explain, so no model.keras is written and heatmaps are refused for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cnnserve.export.exporter import explainable_version
from cnnserve.export.onnx_convert import DEFAULT_OPSET, convert
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
from cnnserve.export.parity import MIN_SAMPLES, check_parity, onnx_session, predict_onnx
from cnnserve.export.triton_config import ModelConfig, TensorConfig, render_config
from cnnserve.repository import PARITY_MAX_ABS_DIFF, file_sha256

log = logging.getLogger(__name__)

INPUT_NAME = "images"
PROBABILITIES = "probabilities"
LOGITS = "logits"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_user_model(path: str | Path):
    """(model, kind): the Keras model of a .keras file, or a TFSMLayer for a SavedModel directory."""
    import keras

    path = Path(path)
    if not path.exists():
        raise ExportInputError(f"--keras {path}: no such file or directory")
    try:
        if path.is_dir():
            if not (path / "saved_model.pb").is_file():
                raise ValueError("a directory without saved_model.pb is not a SavedModel")
            return keras.layers.TFSMLayer(str(path), call_endpoint="serving_default"), "savedmodel"
        return keras.saving.load_model(path, compile=False), "keras"
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors... for files that are not models
        raise ExportInputError(
            f"--keras {path} is not a Keras model (.keras file or SavedModel directory): {type(exc).__name__}: {exc}"
        ) from None


def _signature_shapes(model, kind: str) -> tuple[list, str, list]:
    """(input shape, input dtype, output shape) of the user's model, batch dimension included."""
    if kind == "savedmodel":
        fn = getattr(model, "call_endpoint_fn", None)
        signature = fn.structured_input_signature if fn is not None else None
        specs = [s for s in (signature[1].values() if signature else [])]
        outputs = list(fn.structured_outputs.values()) if fn is not None else []
        if len(specs) != 1 or len(outputs) != 1:
            raise ExportInputError(
                f"the SavedModel's serving_default takes {len(specs)} inputs and returns {len(outputs)} outputs; "
                "an image classifier takes one image and returns one class-score tensor"
            )
        return list(specs[0].shape), specs[0].dtype.name, list(outputs[0].shape)
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportInputError(
            f"model {model.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; an image classifier takes "
            "one image tensor and returns one class-score tensor"
        )
    return list(inputs[0].shape), str(inputs[0].dtype), list(outputs[0].shape)


def _final_layer(model):
    import keras

    if isinstance(model, keras.Sequential):
        layer = model.layers[-1] if model.layers else None
    else:
        outputs = getattr(model, "outputs", None) or []
        layer = outputs[0]._keras_history.operation if len(outputs) == 1 else None
    return _final_layer(layer) if isinstance(layer, keras.Model) else layer


def ends_in_softmax(model) -> bool:
    """Whether the model's last layer is a softmax (a Softmax layer, or an Activation/Dense with softmax)."""
    import keras

    last = _final_layer(model)
    activation = getattr(last, "activation", None)
    return isinstance(last, keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax"


def describe(model, kind: str) -> dict:
    in_shape, in_dtype, out_shape = _signature_shapes(model, kind)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]) or in_shape[3] not in (1, 3):
        raise ExportInputError(
            f"the model's input has shape {in_shape}: not an image tensor [N, H, W, C] with fixed H, W and 1 or 3 "
            "channels (Keras models are channels-last)"
        )
    if "float" not in in_dtype and in_dtype != "uint8":
        raise ExportInputError(f"the model's input is {in_dtype}: not an image tensor (float or uint8 pixels)")
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ExportInputError(f"the model's output has shape {out_shape}: not class scores [N, K]")
    softmax = kind == "keras" and ends_in_softmax(model)
    return {
        "height": int(in_shape[1]),
        "width": int(in_shape[2]),
        "channels": int(in_shape[3]),
        "input_dtype": in_dtype,
        "classes": int(out_shape[1]),
        "ends_in_softmax": softmax,
    }


def served_keras_model(model, kind: str, info: dict, pre: Preprocessing, softmax: bool, name: str):
    """uint8 ``images`` -> preprocessing layers -> the user's model -> optional Softmax, built-in layers only."""
    import keras
    from keras import layers

    h, w, c = info["height"], info["width"], info["channels"]
    images = keras.Input((h, w, c), dtype="uint8", name=INPUT_NAME)
    x = images
    if info["input_dtype"] != "uint8":
        mean, std = pre.per_channel(c)
        # (x_swapped * scale - mean) / std with the swap after it: the per-channel constants in source order.
        order = [2, 1, 0] if pre.bgr else list(range(c))
        src_mean, src_std = np.empty(c, np.float64), np.empty(c, np.float64)
        src_mean[order], src_std[order] = mean, std
        scale = (pre.scale / src_std).tolist()
        offset = (-src_mean / src_std).tolist()
        x = layers.Rescaling(scale=scale if c > 1 else scale[0], offset=offset if c > 1 else offset[0],
                             name="preprocess")(x)  # fmt: skip
        if pre.bgr:
            swap = layers.Dense(3, use_bias=False, trainable=False, name="rgb_to_bgr")
            x = swap(x)
            swap.set_weights([np.eye(3, dtype=np.float32)[:, ::-1].copy()])
    y = model(x)
    if isinstance(y, dict):  # a TFSMLayer returns its signature's outputs by name
        (y,) = y.values()
    if softmax:
        y = layers.Softmax(name=PROBABILITIES)(y)
    return keras.Model(images, y, name=f"{name}_served")


def _export_savedmodel(model, info: dict, path: Path, output_name: str) -> None:
    """A SavedModel whose serving_default maps uint8 ``images`` to ``output_name`` (inference mode)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return {output_name: model(images, training=False)}

    spec = tf.TensorSpec((None, info["height"], info["width"], info["channels"]), tf.uint8, name=INPUT_NAME)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _predict_savedmodel(path: Path, x: np.ndarray, output_name: str, batch_size: int = 32) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
    fn = loaded.signatures["serving_default"]
    out = [
        fn(**{INPUT_NAME: tf.constant(x[i : i + batch_size])})[output_name].numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def load_samples(samples: str | Path | None, info: dict, minimum: int = MIN_SAMPLES) -> tuple[np.ndarray, dict]:
    """Parity images uint8 [N, H, W, C]: ``samples`` (a folder of PNG/JPEG, resized bilinearly to the input as the
    server's Classify does, or a uint8 .npy), topped up to ``minimum`` with generated images; and what they are."""
    h, w, c = info["height"], info["width"], info["channels"]
    given = np.zeros((0, h, w, c), np.uint8)
    source = "none given"
    if samples is not None:
        path = Path(samples)
        if path.is_dir():
            from cnnserve.service.imaging import ImageDecoding, decode_image

            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ExportInputError(f"--samples {path}: no PNG or JPEG files in the folder")
            pre = ImageDecoding(h, w, c)
            try:
                given = np.stack([decode_image(p.read_bytes(), pre, index=i) for i, p in enumerate(files)])
            except Exception as exc:
                raise ExportInputError(f"--samples {path}: {getattr(exc, 'message', exc)}") from None
            source = f"{len(files)} images of {path}"
        elif path.suffix == ".npy" and path.is_file():
            given = np.load(path, allow_pickle=False)
            if given.ndim == 3 and c == 1:
                given = given[..., None]
            if given.dtype != np.uint8 or given.shape[1:] != (h, w, c):
                raise ExportInputError(
                    f"--samples {path}: {given.dtype} {list(given.shape)}; expected uint8 [N, {h}, {w}, {c}]"
                )
            source = f"{len(given)} images of {path}"
        else:
            raise ExportInputError(f"--samples {path}: not a folder of PNG/JPEG images nor a .npy file")
    n_generated = max(0, minimum - len(given))
    rng = np.random.default_rng(0)
    generated = rng.integers(0, 256, (n_generated, h, w, c), dtype=np.uint8)
    x = np.concatenate([given, generated])
    made = f"{n_generated} generated images (uniform random uint8, seed 0)"
    images = (f"{source}, plus {made}" if len(given) else made) if n_generated else source
    return x, {"given": int(len(given)), "generated": int(n_generated), "images": images}


def export_keras(
    path: str | Path,
    name: str,
    repository: str | Path = "models",
    version: int = 1,
    labels: str | Path | None = None,
    scale: float | None = None,
    mean: str | None = None,
    std: str | None = None,
    bgr: bool = False,
    softmax: bool = False,
    samples: str | Path | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_MAX_ABS_DIFF,
    faithfulness_samples: int | None = None,
) -> Path:
    """Wrap, convert, prove parity and install the Keras model at ``path`` as ``<repository>/<name>/<version>/``;
    returns that folder. Nothing is installed when a check fails (ExportInputError, ParityError). The heatmaps
    are scored on the first ``faithfulness_samples`` (default 64; 0: none) of the ``samples`` images given."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    name = checked_name(name)
    if max_batch_size < 1:
        raise ExportInputError(f"--max-batch-size must be >= 1. Received: {max_batch_size}")
    pre = Preprocessing.from_options(scale, mean, std, bgr)
    model, kind = load_user_model(path)
    info = describe(model, kind)
    if info["input_dtype"] == "uint8" and (len(pre.defaults) < 3 or bgr):
        raise ExportInputError(
            "the model already takes uint8 pixels: its preprocessing is in the model, so --scale, --mean, --std "
            "and --bgr do not apply"
        )
    pre.per_channel(info["channels"])
    if softmax and info["ends_in_softmax"]:
        raise ExportInputError("--softmax: the model already ends in a softmax")
    label_list = read_labels(labels, info["classes"])
    x, composition = load_samples(samples, info)
    probabilities = softmax or info["ends_in_softmax"]
    output_name = PROBABILITIES if probabilities else LOGITS
    served = served_keras_model(model, kind, info, pre, softmax, name)
    h, w, c = info["height"], info["width"], info["channels"]
    with staged_model(repository, name, version) as (staged, vdir):
        savedmodel = vdir / "model.savedmodel"
        _export_savedmodel(served, info, savedmodel, output_name)
        if kind == "keras":
            served.save(vdir / "model.keras")
        doc = {"source": Path(path).name, "labels": ",".join(label_list), "version": str(version)}
        convert(savedmodel, vdir / "model.onnx", (h, w, c), INPUT_NAME, output_name, opset=opset, doc=doc,
                params=int(served.count_params()))  # fmt: skip
        session = onnx_session(vdir / "model.onnx")
        report = check_parity(
            _predict_savedmodel(savedmodel, x, output_name),
            predict_onnx(session, x, INPUT_NAME, output_name),
            tolerance,
            provider=session.get_providers()[0],
        )
        source = Path(path)
        meta = {
            "schema_version": 1,
            "name": name,
            "version": version,
            "description": f"Keras model {source.name}, exported by `cnnserve export --keras`",
            "source": {"kind": kind, "path": str(source), "sha256": _source_sha256(source)},
            "input": {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, h, w, c], "layout": "NHWC"},
            "output": {
                "name": output_name,
                "datatype": "FP32",
                "shape": [-1, info["classes"]],
                "scores": "probabilities" if probabilities else "logits (the model's own output; no --softmax)",
            },
            "client_sends": f"UINT8 [N, {h}, {w}, {c}] raw pixels ({'RGB' if c == 3 else 'grey'}, 0-255, NHWC); "
            "the graph normalises",
            "labels": label_list,
            "preprocessing": {
                "height": h,
                "width": w,
                "channels": c,
                "color_mode": "rgb" if c == 3 else "grayscale",
                "resize": "bilinear",
                "value_range": [0, 255],
                "in_graph": True,
                **(
                    pre.as_metadata(c) if info["input_dtype"] != "uint8" else {"formula": "none: the model takes uint8"}
                ),
                "layers": [layer.name for layer in served.layers if layer.name in ("preprocess", "rgb_to_bgr")],
            },  # fmt: skip
            "layers": {},
            "parity": {
                **report.as_dict(),
                "composition": composition,
                "images": composition["images"],
                "reference": "TensorFlow SavedModel of the served model",
            },  # fmt: skip
            "batching": {"max_batch_size": max_batch_size, "max_queue_delay_microseconds": DEFAULT_MAX_QUEUE_DELAY_US},
            "hashes": {
                "onnx_sha256": file_sha256(vdir / "model.onnx"),
                **({"keras_sha256": file_sha256(vdir / "model.keras")} if kind == "keras" else {}),
            },
            "export": {
                "kind": "keras",
                "opset": opset,
                "tf2onnx": tf2onnx.__version__,
                "onnx": onnx.__version__,
                "tensorflow": tf.__version__,
                "created_utc": now_utc(),
            },
        }
        explainable_version(vdir, meta, x, composition, faithfulness_samples)
        (vdir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (staged / "labels.txt").write_text("".join(f"{label}\n" for label in label_list))
        config = ModelConfig(
            name=name,
            inputs=(TensorConfig(INPUT_NAME, "uint8", (h, w, c), format="FORMAT_NHWC"),),
            outputs=(TensorConfig(output_name, "float32", (info["classes"],), label_filename="labels.txt"),),
            max_batch_size=max_batch_size,
            max_queue_delay_microseconds=DEFAULT_MAX_QUEUE_DELAY_US,
        )
        (staged / "config.pbtxt").write_text(render_config(config))
    target = Path(repository) / name / str(version)
    log.info("Exported Keras model %s as %s version %d -> %s (parity: max |diff| %.3g on %d images)", path, name,
             version, target, report.max_abs_diff, report.samples)  # fmt: skip
    return target


def _source_sha256(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    from cnnserve.training.artifacts import tree_sha256

    return tree_sha256(path)
