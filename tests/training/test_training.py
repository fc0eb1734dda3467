"""Tests for cnnserve.training: the variant table, the data split, and a real (tiny) training run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cnnserve.training.architectures import INPUT_NAME, OUTPUT_NAME
from cnnserve.training.data import (
    DEFAULT_DATA,
    HELDOUT_COUNT,
    load_mnist,
    split_dataset,
    stratified_heldout,
)
from cnnserve.training.registry import VARIANTS, get_variant

VARIANT_NAMES = sorted(VARIANTS)


# ------------------------------------------------------------------ registry (no TensorFlow needed)


def test_registry_imports_without_tensorflow():
    code = (
        "import sys\n"
        "import cnnserve.training.registry, cnnserve.training.data, cnnserve.training.cli\n"
        "import cnnserve.export.cli\n"
        "bad = sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_get_variant_unknown_name_lists_known():
    with pytest.raises(KeyError) as err:
        get_variant("resnet9000")
    for name in VARIANT_NAMES:
        assert name in str(err.value)
    assert get_variant("lenet5") is VARIANTS["lenet5"]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_variant_table_entries_are_consistent(name):
    v = VARIANTS[name]
    assert v.name == name
    assert len(v.input_shape) == 3 and all(d > 0 for d in v.input_shape)
    assert len(v.labels) == v.num_classes >= 2 and len(set(v.labels)) == len(v.labels)
    assert 1 <= v.max_batch_size <= 64 and v.max_queue_delay_microseconds > 0
    assert v.epochs >= (0 if v.pretrained else 1) and v.batch_size >= 1 and v.description and v.reference
    assert v.params > 0 and v.last_conv_layer
    if v.smoke_input_shape is not None:
        assert v.smoke_input_shape[2] == v.input_shape[2] and v.smoke_input_shape[:2] < v.input_shape[:2]


# ------------------------------------------------------------------ data


def test_bundled_data_split_is_deterministic_stratified_and_disjoint():
    data = load_mnist(DEFAULT_DATA)
    assert data.x.shape == (8000, 28, 28, 1) and data.x.dtype == np.uint8
    a, b = split_dataset(data), split_dataset(data)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    np.testing.assert_array_equal(a.train, b.train)
    assert a.heldout.size == HELDOUT_COUNT and a.train.size == 8000 - HELDOUT_COUNT
    assert np.intersect1d(a.train, a.heldout).size == 0
    assert np.union1d(a.train, a.heldout).size == 8000
    # Class mix of the held-out set follows the whole set (within one digit per class).
    expected = np.bincount(data.y, minlength=10) * HELDOUT_COUNT / len(data.y)
    assert np.all(np.abs(np.bincount(data.y[a.heldout], minlength=10) - expected) < 1)
    assert a.describe()["heldout_indices_sha256"] == b.describe()["heldout_indices_sha256"]


def test_split_seed_changes_the_heldout_set():
    y = np.repeat(np.arange(10), 50)
    _, h0 = stratified_heldout(y, count=100, seed=0)
    _, h1 = stratified_heldout(y, count=100, seed=1)
    assert h0.size == h1.size == 100
    assert not np.array_equal(h0, h1)


def test_missing_data_file_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="allow_download"):
        load_mnist(tmp_path / "mnist.npz")


def test_full_mnist_layout_uses_official_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        y_test=np.arange(12) % 10,
    )
    data = load_mnist(path)
    split = split_dataset(data)
    assert data.x.shape == (42, 28, 28, 1)
    np.testing.assert_array_equal(split.heldout, np.arange(30, 42))
    np.testing.assert_array_equal(split.train, np.arange(30))


# ------------------------------------------------------------------ models (TensorFlow)


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_every_variant_builds_with_the_served_contract(name):
    import keras

    v = VARIANTS[name]
    model = v.make_model()  # random weights: never downloads
    assert model.count_params() == v.params
    assert model.inputs[0].name == INPUT_NAME
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, *v.input_shape)
    assert tuple(model.outputs[0].shape) == (None, v.num_classes)
    assert model.layers[-1].name == OUTPUT_NAME
    # The in-graph scaling comes first, right after the input, and is the one the variant declares.
    rescale = model.layers[1]
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.name == "rescale"
    x0 = np.zeros((1, *v.input_shape), np.uint8)
    x0[..., :] = np.arange(v.input_shape[2], dtype=np.uint8) * 40 + 10  # a different value per channel
    got = np.asarray(rescale(x0))[0, 0, 0]
    want = x0[0, 0, 0] * np.asarray(v.preprocessing.scale) + np.asarray(v.preprocessing.offset)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    last_conv = model.get_layer(v.last_conv_layer)
    assert isinstance(last_conv, keras.layers.Conv2D)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1] is last_conv
    # The default Grad-CAM layer is a layer of the served model with a spatial map: [None, h, w, channels].
    cam = model.get_layer(v.heatmap_layer)
    assert len(cam.output.shape) == 4 and all(d and d > 0 for d in cam.output.shape[1:])
    # Every layer is named explicitly (Keras' automatic names end in "_<n>" or are the class name).
    for layer in model.layers:
        assert not layer.name.startswith(("conv2d", "dense", "max_pooling", "dropout_", "flatten_"))
    x = np.random.default_rng(0).integers(0, 256, (3, *v.input_shape), dtype=np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, v.num_classes) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cam", "kind"),
    [("resnet50", "conv5_block3_out", "Activation"), ("inception_v3", "mixed10", "Concatenate")],
)
def test_resnet50_and_inception_cam_layer_is_the_last_block_output(name, cam, kind):
    """Grad-CAM's usual layer for these nets is the last block's output (after ResNet's residual addition and
    relu, Inception's concatenation of all branches), not the last Conv2D, which sits inside one branch."""
    import keras

    v = VARIANTS[name]
    assert v.heatmap_layer == cam != v.last_conv_layer
    model = v.make_model(input_shape=v.smoke_input_shape)  # the same layer graph, smaller maps
    layer = model.get_layer(cam)
    assert type(layer).__name__ == kind and not isinstance(layer, keras.layers.Conv2D)
    assert len(layer.output.shape) == 4
    names = [layer.name for layer in model.layers]
    assert names.index(v.last_conv_layer) < names.index(cam)
    # The block's output is what the classifier reads: the global average pooling takes it directly.
    assert model.get_layer("avg_pool").input is layer.output


@pytest.mark.slow
def test_lenet5_has_the_reference_parameter_count():
    model = VARIANTS["lenet5"].make_model()
    counts = {layer.name: layer.count_params() for layer in model.layers}
    assert counts["conv1"] == 156 and counts["conv2"] == 2416
    assert counts["fc1"] == 30840 and counts["fc2"] == 10164 and counts[OUTPUT_NAME] == 850
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 44_426


@pytest.mark.slow
def test_mnist_cnn_layer_sequence_matches_the_reference():
    model = VARIANTS["mnist_cnn"].make_model()
    seq = []
    for layer in model.layers[2:]:  # after the input and the rescaling
        cfg = layer.get_config()
        kind = type(layer).__name__
        if kind == "Conv2D":
            seq.append((kind, cfg["filters"], tuple(cfg["kernel_size"]), cfg["padding"], cfg["activation"]))
        elif kind == "Dense":
            seq.append((kind, cfg["units"], cfg["activation"]))
        elif kind == "Dropout":
            seq.append((kind, cfg["rate"]))
        elif kind == "MaxPooling2D":
            seq.append((kind, tuple(cfg["pool_size"]), tuple(cfg["strides"])))
        else:
            seq.append((kind,))
    assert seq == [
        ("Conv2D", 32, (5, 5), "same", "relu"),
        ("MaxPooling2D", (2, 2), (2, 2)),
        ("Conv2D", 64, (5, 5), "same", "relu"),
        ("MaxPooling2D", (2, 2), (2, 2)),
        ("Flatten",),
        ("Dense", 1024, "relu"),
        ("Dropout", 0.5),
        ("Dense", 256, "relu"),
        ("Dropout", 0.5),
        ("Dense", 50, "relu"),
        ("Dropout", 0.5),
        ("Dense", 10, "softmax"),
    ]
    assert [layer.name for layer in model.layers][2:6] == ["conv1", "pool1", "conv2", "pool2"]


@pytest.mark.slow
def test_digits_bn_noise_and_dropout_are_training_only():
    """The input noise and conv1's dropout regularise training; the served graph is the tutorial's network."""
    import keras

    model = VARIANTS["digits_bn"].make_model()
    names = [layer.name for layer in model.layers]
    assert names == [INPUT_NAME, "rescale", "noise", "conv1", "drop_conv1", "conv2", "bn2", "relu2", "pool2",
                     "flatten", "fc1", OUTPUT_NAME]  # fmt: skip
    noise, drop = model.get_layer("noise"), model.get_layer("drop_conv1")
    assert isinstance(noise, keras.layers.GaussianNoise) and noise.stddev == 0.1 and noise.count_params() == 0
    assert isinstance(drop, keras.layers.Dropout) and drop.rate == 0.2 and drop.count_params() == 0
    x = np.random.default_rng(0).random((4, 8, 8, 10)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(noise(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(drop(x, training=False)), x)
    assert not np.allclose(np.asarray(noise(x, training=True)), x)


SMOOTHED = {"digits_bn", "mnist_cnn"}


def test_only_the_digit_nets_train_with_label_smoothing():
    """digits_bn, mnist_cnn: one-hot labels and categorical cross-entropy with smoothing 0.1; the others:
    their loss."""
    import keras

    from cnnserve.training.train import training_loss

    assert {n for n, v in VARIANTS.items() if v.label_smoothing} == SMOOTHED
    for name in SMOOTHED:
        loss, one_hot = training_loss(VARIANTS[name])
        assert one_hot and isinstance(loss, keras.losses.CategoricalCrossentropy)
        assert loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    for name, v in VARIANTS.items():
        if name not in SMOOTHED:
            assert training_loss(v) == ("sparse_categorical_crossentropy", False)


# The MNIST recipes of issue 16, chosen by cross-validation (docs/models.md): a change here is a new recipe and
# needs its own cross-validation (benchmarks/accuracy_cv.py), not a silent edit of the registry.
AFFINE = {"max_shift": 0.08, "max_rotation": 0.03, "max_zoom": 0.1, "max_shear": 0.15, "horizontal_flip": False,
          "fill_mode": "constant"}  # fmt: skip
MNIST_AUGMENTATION = {
    "mnist_cnn": {**AFFINE, "elastic_alpha": 34.0, "elastic_sigma": 4.0, "numpy_sampler": False},
    "lenet5": {
        "max_shift": 0.08,
        "max_rotation": 0.025,
        "max_zoom": 0.08,
        "max_shear": 0.0,
        "horizontal_flip": False,
        "fill_mode": "constant",
        "elastic_alpha": 0.0,
        "elastic_sigma": 4.0,
        "numpy_sampler": False,
    },
}
MNIST_RECIPES = {
    "mnist_cnn": {"epochs": 24, "batch_size": 64, "label_smoothing": 0.1, "optimizer": "_adam_cosine_to_zero"},
    "lenet5": {"epochs": 40, "batch_size": 32, "label_smoothing": 0.0, "optimizer": "_sgd_momentum_cosine"},
}


@pytest.mark.parametrize("name", sorted(MNIST_RECIPES))
def test_mnist_training_recipe_is_the_cross_validated_one(name):
    v = VARIANTS[name]
    got = {"epochs": v.epochs, "batch_size": v.batch_size, "label_smoothing": v.label_smoothing,
           "optimizer": v.optimizer.__name__}  # fmt: skip
    assert got == MNIST_RECIPES[name]
    assert vars(v.augmentation) == MNIST_AUGMENTATION[name]
    assert v.loss == "sparse_categorical_crossentropy" and v.default_data == "data/mnist-8k.npz"


def test_mnist_optimizer_schedules_reach_their_documented_rates():
    """mnist_cnn: Adam from 1e-3 cosine-decayed to 0; lenet5: Nesterov SGD from 0.1 cosine-decayed to 1e-3."""
    import keras

    steps = 1000
    adam, sgd = VARIANTS["mnist_cnn"].optimizer(steps), VARIANTS["lenet5"].optimizer(steps)
    assert isinstance(adam, keras.optimizers.Adam) and isinstance(sgd, keras.optimizers.SGD)
    assert sgd.nesterov and sgd.momentum == pytest.approx(0.9)
    for opt, start, end in ((adam, 1e-3, 0.0), (sgd, 0.1, 1e-3)):
        schedule = opt._learning_rate
        assert float(schedule(0)) == pytest.approx(start)
        assert float(schedule(steps)) == pytest.approx(end, abs=1e-9)


@pytest.mark.slow
def test_digits_bn_smoke_train_compiles_the_label_smoothed_loss(tmp_path):
    import keras

    from cnnserve.training.train import train_variant

    out = train_variant("digits_bn", smoke=True, epochs=1, output_dir=tmp_path, verbose=0)
    meta = json.loads((out / "train_metadata.json").read_text())
    assert meta["training"]["loss"] == "categorical_crossentropy" and meta["training"]["label_smoothing"] == 0.1
    assert meta["training"]["params"] == VARIANTS["digits_bn"].params  # noise and dropout add no parameters
    assert np.isfinite(meta["metrics"]["train_final_epoch"]["loss"])
    # What was compiled (and saved with the model): categorical cross-entropy with smoothing 0.1.
    loss = keras.models.load_model(out / "model.keras").loss
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["label_smoothing"] == pytest.approx(0.1)


@pytest.mark.slow
def test_train_writes_artifacts_and_an_inference_mode_savedmodel(tmp_path):
    import tensorflow as tf

    from cnnserve.training.train import train_variant

    out = train_variant("mnist_cnn", epochs=1, seed=0, output_dir=tmp_path, limit=512, verbose=0)
    assert out == tmp_path / "mnist_cnn"
    assert (out / "savedmodel" / "saved_model.pb").exists()
    assert (out / "model.keras").exists()
    assert (out / "logs" / "history.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"

    meta = json.loads((out / "train_metadata.json").read_text())
    assert meta["variant"] == "mnist_cnn" and meta["training"]["seed"] == 0
    assert meta["training"]["train_count"] == 512 and meta["training"]["epochs"] == 1
    held = meta["metrics"]["heldout"]
    assert held["count"] == HELDOUT_COUNT and 0.0 <= held["accuracy"] <= 1.0 and held["loss"] > 0
    assert sum(c["count"] for c in held["per_class"].values()) == HELDOUT_COUNT
    assert meta["layers"]["last_conv"] == "conv2" and meta["layers"]["conv"] == ["conv1", "conv2"]
    assert meta["layers"]["cam"] == "conv2"
    assert {"name": "conv2", "class": "Conv2D", "output_shape": [-1, 14, 14, 64]} in meta["layers"]["all"]
    assert len(meta["hashes"]["data_sha256"]) == 64 and len(meta["hashes"]["savedmodel_sha256"]) == 64
    assert {"tensorflow", "keras", "numpy"} <= set(meta["versions"])

    # Training never saw a held-out digit.
    split = split_dataset(load_mnist(DEFAULT_DATA))
    assert meta["split"]["heldout_indices"] == split.heldout.tolist()

    # The serving signature is uint8 -> probabilities and runs in inference mode (dropout off):
    # the same batch twice gives identical outputs.
    loaded = tf.saved_model.load(str(out / "savedmodel"))
    sig = loaded.signatures["serving_default"]
    (spec,) = sig.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 28, 28, 1] and spec.name == INPUT_NAME
    x = load_mnist(DEFAULT_DATA).x[split.heldout[:16]]
    p1 = sig(images=tf.constant(x))[OUTPUT_NAME].numpy()
    p2 = sig(images=tf.constant(x))[OUTPUT_NAME].numpy()
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-5)


def test_train_cli_parses_the_documented_arguments():
    import argparse

    from cnnserve.training.cli import add_train_parser

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "lenet5", "--epochs", "2", "--limit", "64", "--output-dir", "x"])
    assert (args.variant, args.epochs, args.limit, str(args.output_dir)) == ("lenet5", 2, 64, "x")
    assert args.seed == 0 and args.data_path is None and args.batch_size is None  # None: the variant's data
    assert args.smoke is False and args.weights is None and args.distribute == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "no_such_variant"])


# ------------------------------------------------------------------ the other loaders (no TensorFlow)


def test_digits_loader_maps_0_16_to_uint8_and_holds_out_20_percent():
    pytest.importorskip("sklearn")
    from cnnserve.training.datasets import load_digits

    data = load_digits()
    assert data.x.shape == (1797, 8, 8, 1) and data.x.dtype == np.uint8
    assert data.x.max() == 255 and set(np.unique(data.x)) <= {round(v * 255 / 16) for v in range(17)}
    split = split_dataset(data)
    assert split.heldout.size == 359 and np.intersect1d(split.train, split.heldout).size == 0


def _write_pickle(path, obj):
    import pickle

    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickle_batches_reshape_like_the_tutorial(tmp_path):
    from cnnserve.training.datasets import load_cifar10

    rng = np.random.default_rng(0)
    images = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
        images[name] = x
        flat = x.transpose(0, 3, 1, 2).reshape(4, 3072)  # the file's layout: 1024 R, 1024 G, 1024 B
        _write_pickle(tmp_path / name, {"data": flat, "labels": [0, 1, 2, 9], "batch_label": name})
    data = load_cifar10(tmp_path)
    assert data.x.shape == (24, 32, 32, 3)
    np.testing.assert_array_equal(data.x[:4], images["data_batch_1"])
    np.testing.assert_array_equal(data.x[-4:], images["test_batch"])
    split = split_dataset(data)
    np.testing.assert_array_equal(split.heldout, np.arange(20, 24))  # the official test batch
    assert split.rule.startswith("official")


def test_cifar100_pickle_files_use_fine_labels(tmp_path):
    from cnnserve.training.datasets import load_cifar100

    flat = np.zeros((3, 3072), np.uint8)
    _write_pickle(tmp_path / "train", {"data": flat, "fine_labels": [5, 99, 0], "coarse_labels": [1, 2, 3]})
    _write_pickle(tmp_path / "test", {"data": flat[:2], "fine_labels": [42, 7], "coarse_labels": [0, 0]})
    data = load_cifar100(tmp_path)
    assert data.y.tolist() == [5, 99, 0, 42, 7] and data.official_test.tolist() == [3, 4]


def _png(path, colour, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_split_folders_loader_reads_train_validation_test(tmp_path):
    from cnnserve.training.datasets import load_split_folders

    for part, n in (("train", 3), ("validation", 2), ("test", 1)):
        for cls, colour in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200))):
            for i in range(n):
                _png(tmp_path / part / cls / f"{i}.jpg", colour)
    data = load_split_folders(tmp_path, input_shape=(16, 16, 3))
    assert data.labels == ("cats", "dogs") and data.x.shape == (12, 16, 16, 3)
    split = split_dataset(data)
    assert split.heldout.size == 2 and split.train.size == 6 and data.validation.size == 4
    assert np.intersect1d(split.train, data.validation).size == 0
    assert (data.x[data.y == 1][..., 2] > 150).all()  # resized, RGB order kept


def test_image_folders_take_class_names_or_indices(tmp_path):
    from cnnserve.training.datasets import load_image_folders
    from cnnserve.training.registry import imagenet_labels

    labels = imagenet_labels()
    assert labels[340] == "zebra" and labels[0] == "tench" and len(set(labels)) == 1000
    _png(tmp_path / "zebra" / "a.png", (255, 255, 255))
    _png(tmp_path / "1" / "b.png", (0, 0, 0))
    data = load_image_folders(tmp_path, input_shape=(8, 8, 3), labels=labels)
    assert sorted(data.y.tolist()) == [1, 340]
    _png(tmp_path / "not_a_class" / "c.png", (0, 0, 0))
    with pytest.raises(ValueError, match="not_a_class"):
        load_image_folders(tmp_path, input_shape=(8, 8, 3), labels=labels)


def test_smoke_data_is_deterministic_and_learnable_shapes():
    from cnnserve.training.data import SMOKE_DATA, load_dataset

    a = load_dataset("cifar100", SMOKE_DATA, input_shape=(32, 32, 3), labels=tuple(map(str, range(100))))
    b = load_dataset("cifar100", SMOKE_DATA, input_shape=(32, 32, 3), labels=tuple(map(str, range(100))))
    assert a.sha256 == b.sha256 and a.x.shape[1:] == (32, 32, 3) and a.y.max() < 100
    assert split_dataset(a).heldout.size == 256


def test_weights_option_is_checked_before_training(tmp_path):
    from cnnserve.training.train import resolve_weights

    assert resolve_weights(VARIANTS["vgg16"], None, smoke=False) == "imagenet"
    assert resolve_weights(VARIANTS["vgg16"], None, smoke=True) is None
    assert resolve_weights(VARIANTS["vgg16_transfer"], "none", smoke=False) is None
    with pytest.raises(FileNotFoundError):
        resolve_weights(VARIANTS["resnet50"], str(tmp_path / "missing.h5"), smoke=False)
    with pytest.raises(ValueError, match="no pretrained weights"):
        resolve_weights(VARIANTS["cifar10_cnn"], "imagenet", smoke=False)
