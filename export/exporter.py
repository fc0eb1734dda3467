"""Export a trained variant into the Triton-layout model repository, with ONNX parity proven first.

Python API: :func:`export_variant`. CLI: ``cnnserve export VARIANT`` (see ``cli.py``).

Everything is built in a staging folder beside the repository and moved into place only after the
ONNX model passed ``onnx.checker`` and the parity check, so a failed export writes nothing into the
repository. Layout (``models/NAME/``): ``config.pbtxt``, ``labels.txt``, ``<version>/model.onnx``,
``<version>/model.savedmodel/``, ``<version>/model.keras``, ``<version>/metadata.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cnnserve.export.fp16 import make_fp16_variant
from cnnserve.export.onnx_convert import DEFAULT_OPSET, convert
from cnnserve.export.parity import MIN_SAMPLES, check_parity, onnx_session, predict_onnx
from cnnserve.export.triton_config import ModelConfig, TensorConfig, render_config
from cnnserve.repository import PARITY_MAX_ABS_DIFF, file_sha256
from cnnserve.training.architectures import INPUT_NAME, OUTPUT_NAME
from cnnserve.training.artifacts import ArtifactPaths, tree_sha256
from cnnserve.training.data import indices_sha256, load_dataset, split_dataset
from cnnserve.training.registry import Variant, get_variant

log = logging.getLogger(__name__)

METADATA_SCHEMA_VERSION = 1


class ExportError(RuntimeError):
    """The artifacts cannot be exported (missing, inconsistent with the data, or failed checks)."""


def served_shape(train_meta: dict) -> tuple[int, int, int]:
    """(H, W, C) the model was trained and saved at (smoke runs may use a smaller one than the registry)."""
    return tuple(int(d) for d in train_meta["input"]["shape"][1:])


def triton_config(variant: Variant, name: str, input_shape=None, num_classes: int | None = None) -> ModelConfig:
    h, w, c = input_shape or variant.input_shape
    k = num_classes or variant.num_classes
    return ModelConfig(
        name=name,
        inputs=(TensorConfig(INPUT_NAME, "uint8", (h, w, c), format="FORMAT_NHWC"),),
        outputs=(TensorConfig(OUTPUT_NAME, "float32", (k,), label_filename="labels.txt"),),
        max_batch_size=variant.max_batch_size,
        max_queue_delay_microseconds=variant.max_queue_delay_microseconds,
        preferred_batch_size=variant.preferred_batch_size,
        intra_op_threads=variant.intra_op_threads,
    )


def heldout_samples(variant: Variant, data_path, train_meta: dict, limit: int | None, minimum: int = MIN_SAMPLES):
    """The held-out samples training used, verified against the training metadata.

    Parity is about numerics, not accuracy: when a small data set holds out fewer than ``minimum``
    samples, training samples, then generated random images, top the parity set up to ``minimum``
    (the composition is recorded in the parity report).
    """
    data = load_dataset(
        variant.dataset, data_path, input_shape=served_shape(train_meta), labels=tuple(train_meta["labels"])
    )
    if data.sha256 != train_meta["data"]["sha256"]:
        raise ExportError(
            f"{data_path} (sha256 {data.sha256[:12]}) is not the file {variant.name} was trained on "
            f"({train_meta['data']['path']}, sha256 {train_meta['data']['sha256'][:12]})"
        )
    split = split_dataset(data)
    if indices_sha256(split.heldout) != train_meta["split"]["heldout_indices_sha256"]:
        raise ExportError("The held-out split differs from the one recorded at training time")
    held = split.heldout if limit is None else split.heldout[:limit]
    train = split.train[: max(0, minimum - len(held))]
    x = data.x[np.concatenate([held, train]).astype(np.int64)]
    n_generated = max(0, minimum - len(x))
    if n_generated:  # a data set smaller than the parity set: uniform random images fill it up
        rng = np.random.default_rng(0)
        x = np.concatenate([x, rng.integers(0, 256, (n_generated, *x.shape[1:]), dtype=np.uint8)])
    composition = {"heldout": int(len(held)), "train": int(len(train)), "generated": int(n_generated)}
    return data, x, composition


def _tf_probabilities(savedmodel: Path, x: np.ndarray) -> np.ndarray:
    from cnnserve.training.train import predict_savedmodel

    return predict_savedmodel(savedmodel, x)


def _metadata(
    variant: Variant,
    name: str,
    version: int,
    train_meta: dict,
    parity: dict,
    hashes: dict,
    opset: int,
) -> dict:
    import onnx
    import tensorflow as tf
    import tf2onnx

    h, w, c = served_shape(train_meta)
    labels = train_meta["labels"]
    pre = variant.preprocessing
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "name": name,
        "variant": variant.name,
        "version": version,
        "description": variant.description,
        "input": {
            "name": INPUT_NAME,
            "datatype": "UINT8",
            "shape": [-1, h, w, c],
            "layout": "NHWC",
        },
        "output": {
            "name": OUTPUT_NAME,
            "datatype": "FP32",
            "shape": [-1, len(labels)],
        },
        "labels": list(labels),
        "smoke": bool(train_meta.get("smoke", False)),
        "preprocessing": {
            "height": h,
            "width": w,
            "channels": c,
            "color_mode": pre.color_mode,
            "resize": pre.resize,
            "value_range": [0, 255],
            "in_graph": pre.in_graph,
            "scale": list(pre.scale) if isinstance(pre.scale, tuple) else pre.scale,
            "offset": list(pre.offset) if isinstance(pre.offset, tuple) else pre.offset,
            "invert_hint": pre.invert_hint,
        },
        "layers": train_meta["layers"],
        "metrics": train_meta["metrics"],
        "data": train_meta.get("data", {}),
        "training": train_meta["training"],
        "split": {k: v for k, v in train_meta["split"].items() if k != "heldout_indices"},
        "parity": parity,
        "batching": {
            "max_batch_size": variant.max_batch_size,
            "max_queue_delay_microseconds": variant.max_queue_delay_microseconds,
        },
        "hashes": hashes,
        "export": {
            "opset": opset,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "tensorflow": tf.__version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }


def _install(staged_model: Path, target: Path, version: int) -> None:
    """Move a staged ``NAME/`` folder into the repository.

    A new model is one rename. For an existing model only this version's folder is swapped (the old
    one renamed aside first), then ``config.pbtxt`` and ``labels.txt`` are replaced with ``os.replace``;
    other versions are left alone.
    """
    if not target.exists():
        staged_model.rename(target)
        return
    new_version, old_version = staged_model / str(version), target / str(version)
    if old_version.exists():
        trash = target / f".{version}.old"
        shutil.rmtree(trash, ignore_errors=True)
        old_version.rename(trash)
        new_version.rename(old_version)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        new_version.rename(old_version)
    for fname in ("labels.txt", "config.pbtxt"):
        os.replace(staged_model / fname, target / fname)


def checked_artifacts(paths: ArtifactPaths, name: str) -> dict:
    """The training metadata, once the SavedModel and the .keras file are there and unchanged since training."""
    train_meta = paths.read_metadata()
    for required in (paths.savedmodel, paths.keras_model):
        if not required.exists():
            raise ExportError(f"Missing training artifact {required}; run `cnnserve train {name}` again")
    if tree_sha256(paths.savedmodel) != train_meta["hashes"]["savedmodel_sha256"]:
        raise ExportError(f"{paths.savedmodel} changed since training (sha256 differs from the metadata)")
    return train_meta


def parity_report(onnx_path: Path, savedmodel: Path, x: np.ndarray, tolerance: float):
    """onnxruntime against the SavedModel on ``x``; ParityError unless they agree (``check_parity``)."""
    session = onnx_session(onnx_path)
    onnx_probs = predict_onnx(session, x, INPUT_NAME, OUTPUT_NAME)
    report = check_parity(_tf_probabilities(savedmodel, x), onnx_probs, tolerance, provider=session.get_providers()[0])
    log.info(
        "Parity on %d held-out samples: top-1 %.4f, max |dp| %.3g", report.samples, report.top1_agreement,
        report.max_abs_diff,
    )  # fmt: skip
    return report


def version_hashes(vdir: Path, data_sha256: str) -> dict:
    """What the server checks before serving (onnx_sha256) and what ties the version to its training."""
    return {
        "onnx_sha256": file_sha256(vdir / "model.onnx"),
        "savedmodel_sha256": tree_sha256(vdir / "model.savedmodel"),
        "keras_sha256": file_sha256(vdir / "model.keras"),
        "data_sha256": data_sha256,
    }


FAITHFULNESS_SAMPLES = 64
SMOKE_FAITHFULNESS_SAMPLES = 8


def _score_parity_images(vdir: Path, meta: dict, x: np.ndarray, composition: dict, samples: int | None) -> None:
    """Score on the real images among the parity images: a variant's come first (held-out, then training
    digits), a --keras model's given ones first (then generated noise, which says nothing about a map)."""
    if samples is None:
        samples = SMOKE_FAITHFULNESS_SAMPLES if meta.get("smoke") else FAITHFULNESS_SAMPLES
    real = len(x) - int(composition.get("generated", 0))
    count = max(0, min(samples, real))
    if "given" in composition:
        source = f"export --keras: the first {count} --samples images"
    else:
        held = min(count, int(composition.get("heldout", 0)))
        source = f"export: the first {count} parity samples ({held} held-out)"
    score_heatmaps(vdir, meta, x, count, source)


def score_heatmaps(vdir: Path, meta: dict, x: np.ndarray, samples: int, source: str) -> dict:
    """Score ``vdir``'s heatmaps (its model.keras) on the first ``samples`` images of ``x`` (``source`` says what
    they are) and put the result into ``meta["faithfulness"]`` (docs/explainer.md, "Faithful heatmaps")."""
    if samples <= 0:
        return meta
    from cnnserve.explainer import faithfulness

    used = x[:samples]
    meta["faithfulness"] = faithfulness.score_version(
        vdir, meta, used, bounds=faithfulness.Bounds(samples=samples), source=source
    )
    best = meta["faithfulness"]["default"]
    log.info(
        "Faithfulness on %d samples in %.1f s: default %s", len(used), meta["faithfulness"]["seconds"],
        f"{best['method']} at {best['layer']} (score {best['score']})" if best else "none passes the randomisation check",
    )  # fmt: skip
    return meta


def grad_cam_layer(keras_path: Path) -> tuple[str, str]:
    """(layer, why not): the explainer's default Grad-CAM layer of a saved model.keras, as the explainer finds it."""
    import keras

    from cnnserve.explainer.graph import ExplainableModel, NotExplainable

    try:
        explainable = ExplainableModel(keras.saving.load_model(keras_path, compile=False))
    except NotExplainable as exc:
        return "", str(exc)
    layer = explainable.default_heatmap_layer()
    return layer, "" if layer else "the model has no spatial layer"


def explainable_version(
    vdir: Path,
    meta: dict,
    x: np.ndarray | None = None,
    composition: dict | None = None,
    faithfulness_samples: int | None = None,
) -> dict:
    """The explainable-version step: every export path that writes a model.keras (``export_variant``, and
    ``cnnserve export --keras`` in keras_model.py) runs it on the version folder and its metadata, with the parity
    images ``x`` (``composition`` says what they are), before metadata.json is written. It records the Grad-CAM
    layer the explainer's rules find where none is recorded (``layers.cam``) and whether the version is
    explainable (``explainable``), then scores the heatmaps for faithfulness (:func:`score_heatmaps`) on the first
    ``faithfulness_samples`` real images of ``x`` (held-out digits or the user's --samples, never generated ones;
    default ``FAITHFULNESS_SAMPLES``, ``SMOKE_FAITHFULNESS_SAMPLES`` for smoke runs; 0: not scored)."""
    keras_path = vdir / "model.keras"
    layers = meta.setdefault("layers", {})
    if not keras_path.is_file():
        meta["explainable"] = {"available": False, "reason": f"no model.keras beside model.onnx in {vdir.name}/"}
        return meta
    if layers.get("cam"):
        meta["explainable"] = {"available": True, "reason": "", "cam_layer_from": "recorded"}
    else:
        layer, why = grad_cam_layer(keras_path)
        if layer:
            layers["cam"] = layer
        meta["explainable"] = {"available": bool(layer), "reason": why, "cam_layer_from": "the explainer's rules"}
    if meta["explainable"]["available"] and x is not None:
        _score_parity_images(vdir, meta, x, composition or {}, faithfulness_samples)
    return meta


def export_variant(
    name: str,
    artifacts: str | Path = "artifacts",
    repository: str | Path = "models",
    version: int = 1,
    data_path: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    parity_samples: int | None = None,
    tolerance: float = PARITY_MAX_ABS_DIFF,
    fp16: bool = False,
    faithfulness_samples: int | None = None,
) -> Path:
    """Convert ``<artifacts>/<name>/savedmodel`` to ONNX, prove parity, and install it; returns the
    version folder ``<repository>/<name>/<version>/``.

    Parity runs on the held-out samples recorded at training time (all of them by default, at least
    256): onnxruntime (CPU) against the SavedModel's serving signature must agree on every top-1 class
    and within ``tolerance`` on every probability, else :class:`~cnnserve.export.parity.ParityError`.
    ``data_path`` defaults to the data training used (from its metadata). Models above
    ``SUBPROCESS_PARAMS`` parameters are converted in a child process with protobuf's pure-Python backend
    (see ``onnx_convert.convert``). ``fp16``: install the float16 variant instead, once it matches the fp32
    ONNX model on the same samples (``cnnserve.export.fp16``); metadata.json records the precision.

    The heatmaps are scored for faithfulness on the first ``faithfulness_samples`` parity samples (held-out
    first; default ``FAITHFULNESS_SAMPLES``, ``SMOKE_FAITHFULNESS_SAMPLES`` for smoke runs, 0: not scored) and
    the scores, with the default layer and method they choose, go into metadata.json (:func:`score_heatmaps`).
    """
    variant = get_variant(name)
    if version < 1:
        raise ValueError(f"Model version must be >= 1. Received: {version}")
    if parity_samples is not None and parity_samples < MIN_SAMPLES:
        raise ValueError(f"--parity-samples must be >= {MIN_SAMPLES}. Received: {parity_samples}")
    paths = ArtifactPaths.of(artifacts, name)
    train_meta = checked_artifacts(paths, name)
    data_path = train_meta["data"]["path"] if data_path is None else data_path
    input_shape = served_shape(train_meta)
    labels = list(train_meta["labels"])
    data, x, composition = heldout_samples(variant, data_path, train_meta, parity_samples)
    repository = Path(repository)
    repository.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".cnnserve-export-{name}-", dir=repository.resolve().parent))
    try:
        staged = staging / name
        vdir = staged / str(version)
        vdir.mkdir(parents=True)
        onnx_path = vdir / "model.onnx"
        doc = {"variant": name, "labels": ",".join(labels), "version": str(version)}
        params = int(train_meta["training"].get("params", 0))
        convert(paths.savedmodel, onnx_path, input_shape, INPUT_NAME, OUTPUT_NAME, opset=opset, doc=doc, params=params)
        report = parity_report(onnx_path, paths.savedmodel, x, tolerance)
        precision = make_fp16_variant(onnx_path, x, INPUT_NAME, OUTPUT_NAME) if fp16 else {"precision": "fp32"}
        shutil.copytree(paths.savedmodel, vdir / "model.savedmodel")
        shutil.copy2(paths.keras_model, vdir / "model.keras")
        parity = {**report.as_dict(), "composition": composition}
        meta = _metadata(variant, name, version, train_meta, parity, version_hashes(vdir, data.sha256), opset)
        meta.update(precision)
        explainable_version(vdir, meta, x, composition, faithfulness_samples)
        (vdir / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (staged / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
        (staged / "config.pbtxt").write_text(render_config(triton_config(variant, name, input_shape, len(labels))))
        repository.mkdir(parents=True, exist_ok=True)
        _install(staged, repository / name, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    target = repository / name / str(version)
    log.info("Exported %s version %d -> %s", name, version, target)
    return target
