"""Train one registered variant and write its artifacts (SavedModel, .keras, metadata, TensorBoard logs).

Python API: :func:`train_variant`. CLI: ``cnnserve train VARIANT`` (see ``cli.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import platform
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cnnserve.repository import file_sha256
from cnnserve.training.architectures import INPUT_NAME, OUTPUT_NAME
from cnnserve.training.artifacts import ArtifactPaths, tree_sha256
from cnnserve.training.data import SMOKE_DATA, Dataset, Split, load_dataset, split_dataset
from cnnserve.training.registry import Variant, get_variant

log = logging.getLogger(__name__)

METADATA_SCHEMA_VERSION = 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow; make TF ops deterministic (cheap on CPU)."""
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def training_callbacks(log_dir: Path) -> list:
    """A CSV history always; TensorBoard event files when the ``tensorboard`` package is installed."""
    import keras

    log_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [keras.callbacks.CSVLogger(str(log_dir / "history.csv"))]
    # tf.summary needs the tensorboard package; tensorflow-cpu does not depend on it.
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed: writing only %s/history.csv", log_dir)
    else:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(log_dir)))
    return callbacks


def layer_table(model) -> list[dict]:
    """Name, class and output shape (batch as -1) of every layer, in order."""
    rows = []
    for layer in model.layers:
        shape = [-1 if d is None else int(d) for d in layer.output.shape]
        rows.append({"name": layer.name, "class": type(layer).__name__, "output_shape": shape})
    return rows


def conv_layer_names(model) -> list[str]:
    import keras

    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def export_savedmodel(model, input_shape: tuple[int, int, int], path: Path) -> None:
    """Write a SavedModel whose ``serving_default`` maps uint8 ``images`` to ``probabilities``.

    The endpoint calls the model with ``training=False``, so dropout is inactive (and batchnorm uses its
    moving statistics) in everything served from it.
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    spec = tf.TensorSpec((None, *input_shape), tf.uint8, name=INPUT_NAME)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def predict_savedmodel(path: Path, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Class probabilities from a SavedModel's ``serving_default`` signature."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
    fn = loaded.signatures["serving_default"]
    out = [
        fn(**{INPUT_NAME: tf.constant(x[i : i + batch_size])})[OUTPUT_NAME].numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def evaluate(probabilities: np.ndarray, y: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, mean cross-entropy and per-class counts of ``probabilities`` against labels ``y``."""
    pred = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(y)), y]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    per_class = {
        labels[c]: {"count": int((y == c).sum()), "correct": int(((y == c) & (pred == c)).sum())}
        for c in range(len(labels))
    }
    return {
        "accuracy": float((pred == y).mean()),
        "loss": loss,
        "count": int(len(y)),
        "correct": int((pred == y).sum()),
        "per_class": per_class,
    }


def _library_versions() -> dict:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


SMOKE_EPOCHS = 1
SMOKE_BATCH = 8


def recalibrate_batchnorm(model, x: np.ndarray) -> int:
    """Set every BatchNormalization layer's moving mean/variance to the statistics of ``x``.

    A smoke run takes a handful of steps: with Keras' momentum 0.99 the moving statistics stay near their
    initial (0, 1) while a deep, barely trained net's real activations are far from them, so inference-mode
    outputs saturate and tiny float differences between runtimes become large probability differences.
    One training-mode pass with momentum 0 (the standard "update BN" step after weight averaging) fixes
    that; weights are untouched. Returns the number of layers recalibrated.
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    momenta = [layer.momentum for layer in bns]
    try:
        for layer in bns:
            layer.momentum = 0.0
        model(x, training=True)
    finally:
        for layer, momentum in zip(bns, momenta, strict=True):
            layer.momentum = momentum
    return len(bns)


def training_loss(variant: Variant):
    """The loss to compile and whether it takes one-hot labels: the variant's ``loss`` name, or
    ``CategoricalCrossentropy(label_smoothing=...)`` where the variant asks for label smoothing."""
    if not variant.label_smoothing:
        return variant.loss, False
    if variant.loss != "sparse_categorical_crossentropy":
        raise ValueError(f"{variant.name}: label smoothing replaces the sparse cross-entropy. Received: {variant.loss}")
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=variant.label_smoothing), True


def resolve_weights(variant: Variant, weights: str | None, smoke: bool) -> str | None:
    """``--weights``: ``imagenet``, ``none`` or a local PATH; default: the variant's (none in smoke mode)."""
    if weights is None:
        weights = "none" if smoke or not variant.pretrained else variant.default_weights
    if weights != "none" and not variant.pretrained and variant.name != "alexnet":
        raise ValueError(f"{variant.name} has no pretrained weights. Received: --weights {weights}")
    if weights not in ("none", "imagenet") and not Path(weights).exists():
        raise FileNotFoundError(f"Weights file {weights} not found (--weights imagenet|none|PATH)")
    return None if weights == "none" else weights


@dataclass(frozen=True)
class TrainPlan:
    """What one run trains with, once the variant's defaults and the smoke settings are applied."""

    data_path: str | Path
    epochs: int
    batch_size: int
    weights: str | None
    input_shape: tuple[int, ...]


@dataclass
class TrainData:
    """The data of one run: the training subset, the held-out split, the validation split if any."""

    data: Dataset
    split: Split
    labels: tuple[str, ...]
    train_idx: np.ndarray

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.x[self.train_idx], self.data.y[self.train_idx]

    @property
    def heldout(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.x[self.split.heldout], self.data.y[self.split.heldout]


def train_variant(
    name: str,
    data_path: str | Path | None = None,
    epochs: int | None = None,
    seed: int = 0,
    output_dir: str | Path = "artifacts",
    limit: int | None = None,
    batch_size: int | None = None,
    verbose: int | str = "auto",
    smoke: bool = False,
    weights: str | None = None,
    distribute: str = "none",
) -> Path:
    """Train variant ``name`` and write ``<output_dir>/<name>/``; returns that folder.

    ``limit`` keeps only that many (seeded, random) training samples, for tests and quick runs; the
    held-out split is unaffected. ``smoke`` trains a few steps on generated data (``data_path`` "smoke") at
    the variant's smoke input size, with random initial weights unless ``weights`` says otherwise.
    ``distribute`` picks the ``tf.distribute`` strategy (see ``distribute.py``). ``epochs=0`` (pretrained
    variants) serves the pretrained weights as they are. Artifacts are built in a temporary folder beside
    the target and moved into place at the end, so a failed run leaves the previous artifacts untouched.
    """
    from cnnserve.training.distribute import make_strategy

    variant = get_variant(name)
    plan = plan_run(variant, data_path, epochs, batch_size, weights, smoke)
    strategy = make_strategy(distribute)
    seed_everything(seed)
    run = load_run_data(variant, plan, seed, limit)
    x_train, y_train = run.train
    x_held, y_held = run.heldout
    log.info(
        "Training %s: %d train / %d held-out samples of %s, %d epochs, batch %d, seed %d, weights %s",
        name, len(y_train), len(y_held), run.data.source, plan.epochs, plan.batch_size, seed, plan.weights,
    )  # fmt: skip
    loss, one_hot = training_loss(variant)
    with strategy.scope():
        model = variant.make_model(plan.input_shape, len(run.labels), weights=plan.weights)
        steps = max(1, plan.epochs) * -(-len(y_train) // plan.batch_size)
        model.compile(optimizer=variant.optimizer(steps), loss=loss, metrics=["accuracy"])
    paths = ArtifactPaths.of(output_dir, name)
    with staged_artifacts(paths) as staged:
        started = time.monotonic()
        history = fit(model, variant, plan, run, staged.logs, one_hot, seed, verbose)
        recalibrated = recalibrate_batchnorm(model, x_train[:64]) if smoke else 0
        train_seconds = time.monotonic() - started
        served_probs = save_served_model(model, plan.input_shape, staged, x_held)
        heldout = evaluate(served_probs, y_held, run.labels)
        record = {
            "metrics": {
                "heldout": heldout,
                "train_final_epoch": {k: float(v[-1]) for k, v in history.items()},
                "train_seconds": round(train_seconds, 2),
            },
            "training": {
                **training_record(model, variant, plan, seed, limit, len(y_train), one_hot),
                "batchnorm_recalibrated_layers": recalibrated,
                "distribute": {"strategy": distribute, "replicas": int(strategy.num_replicas_in_sync)},
            },
        }
        metadata = artifact_metadata(name, variant, plan, run, model, staged, smoke) | record
        staged.metadata.write_text(json.dumps(metadata, indent=2) + "\n")
    log.info(
        "%s: held-out accuracy %.4f (%d/%d), loss %.4f, trained in %.1fs -> %s",
        name, heldout["accuracy"], heldout["correct"], heldout["count"], heldout["loss"], train_seconds, paths.root,
    )  # fmt: skip
    return paths.root


def plan_run(
    variant: Variant, data_path, epochs: int | None, batch_size: int | None, weights: str | None, smoke: bool
) -> TrainPlan:
    """The variant's defaults for what was not given; smoke runs take generated data at the smoke size."""
    if smoke:
        data_path = SMOKE_DATA
        epochs = SMOKE_EPOCHS if epochs is None else epochs
        batch_size = min(variant.batch_size, SMOKE_BATCH) if batch_size is None else batch_size
    data_path = variant.default_data if data_path is None else data_path
    epochs = variant.epochs if epochs is None else epochs
    batch_size = variant.batch_size if batch_size is None else batch_size
    min_epochs = 0 if variant.pretrained else 1
    if epochs < min_epochs or batch_size < 1:
        raise ValueError(
            f"epochs must be >= {min_epochs} and batch size >= 1. Received: epochs={epochs}, batch={batch_size}"
        )
    input_shape = tuple(variant.smoke_input_shape or variant.input_shape) if smoke else variant.input_shape
    return TrainPlan(data_path, epochs, batch_size, resolve_weights(variant, weights, smoke), input_shape)


def load_run_data(variant: Variant, plan: TrainPlan, seed: int, limit: int | None) -> TrainData:
    """The dataset, checked against the variant, split; ``limit`` keeps a seeded subset of the training part."""
    name = variant.name
    data = load_dataset(variant.dataset, plan.data_path, input_shape=plan.input_shape, labels=variant.labels)
    if data.x.shape[1:] != tuple(plan.input_shape):
        raise ValueError(
            f"{name} expects images {plan.input_shape}. Received: {data.x.shape[1:]} from {plan.data_path}"
        )
    labels = tuple(data.labels or variant.labels)
    if int(data.y.max()) >= len(labels):
        raise ValueError(f"{plan.data_path} has class index {int(data.y.max())} but {name} has {len(labels)} classes")
    split: Split = split_dataset(data)
    train_idx = split.train
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be >= 1. Received: {limit}")
        train_idx = np.sort(np.random.default_rng(seed).permutation(train_idx)[:limit])
    return TrainData(data, split, labels, train_idx)


@contextlib.contextmanager
def staged_artifacts(paths: ArtifactPaths):
    """A temporary folder beside ``paths.root``, moved into place only if the block succeeds."""
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{paths.root.name}.", dir=paths.root.parent))
    try:
        yield ArtifactPaths(staging)
        if paths.root.exists():
            shutil.rmtree(paths.root)
        staging.rename(paths.root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def fit(model, variant: Variant, plan: TrainPlan, run: TrainData, logs: Path, one_hot: bool, seed: int, verbose):
    """Train on the augmented, seeded pipeline; returns Keras' history (empty when epochs is 0)."""
    from cnnserve.training.augment import train_dataset

    def fit_labels(y: np.ndarray) -> np.ndarray:
        return np.eye(len(run.labels), dtype=np.float32)[y] if one_hot else y

    if plan.epochs == 0:
        logs.mkdir(parents=True, exist_ok=True)
        return {}
    x_train, y_train = run.train
    ds = train_dataset(x_train, fit_labels(y_train), plan.batch_size, variant.augmentation, seed)
    validation = None
    if run.data.validation is not None and len(run.data.validation):
        validation = (run.data.x[run.data.validation], fit_labels(run.data.y[run.data.validation]))
    history = model.fit(
        ds,
        epochs=plan.epochs,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        validation_data=validation,
        callbacks=training_callbacks(logs),
    )
    return history.history


def save_served_model(model, input_shape, staged: ArtifactPaths, x_held: np.ndarray) -> np.ndarray:
    """Write the SavedModel and the .keras file; the SavedModel's held-out probabilities, checked against Keras'
    (a serving function left in training mode would differ)."""
    keras_probs = model.predict(x_held, batch_size=64, verbose=0)
    export_savedmodel(model, input_shape, staged.savedmodel)
    model.save(staged.keras_model)
    served_probs = predict_savedmodel(staged.savedmodel, x_held)
    served_gap = float(np.abs(served_probs - keras_probs).max())
    if served_gap > 1e-5:
        raise RuntimeError(
            f"SavedModel disagrees with the Keras model on held-out digits (max |dp|={served_gap:.3g}); "
            "the serving function is not in inference mode"
        )
    return served_probs


def training_record(model, variant: Variant, plan: TrainPlan, seed: int, limit, count: int, one_hot: bool) -> dict:
    """metadata.json's "training": how the model was trained."""
    return {
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "seed": seed,
        "limit": limit,
        "train_count": int(count),
        "optimizer": type(model.optimizer).__name__,
        "optimizer_note": variant.optimizer_note,
        "loss": "categorical_crossentropy" if one_hot else variant.loss,
        "label_smoothing": variant.label_smoothing,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "params": int(model.count_params()),
        "weights": plan.weights or "none",
    }


def artifact_metadata(
    name: str, variant: Variant, plan: TrainPlan, run: TrainData, model, staged: ArtifactPaths, smoke: bool
) -> dict:
    """metadata.json apart from the run's metrics and training record: the contract, data, layers, hashes."""
    labels, data = run.labels, run.data
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "variant": name,
        "description": variant.description,
        "labels": list(labels),
        "smoke": smoke,
        "input": {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, *plan.input_shape]},
        "output": {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(labels)]},
        "preprocessing": {
            "in_graph": variant.preprocessing.in_graph,
            "color_mode": variant.preprocessing.color_mode,
            "value_range": [0, 255],
            "augmentation_training_only": vars(variant.augmentation),
        },
        "split": {**run.split.describe(), "heldout_indices": [int(i) for i in run.split.heldout]},
        "data": {
            "path": str(plan.data_path),
            "source": data.source,
            "dataset": variant.dataset,
            "sha256": data.sha256,
            "count": int(len(data.y)),
        },
        "layers": {
            "cam": variant.heatmap_layer,
            "last_conv": variant.last_conv_layer,
            "conv": conv_layer_names(model),
            "all": layer_table(model),
        },
        "hashes": {
            "data_sha256": data.sha256,
            "savedmodel_sha256": tree_sha256(staged.savedmodel),
            "keras_sha256": file_sha256(staged.keras_model),
        },
        "versions": _library_versions(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
