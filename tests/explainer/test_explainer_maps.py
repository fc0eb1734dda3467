"""Proof that the explainer's maps are right, on real TensorFlow models trained here in seconds.

- planted objects: the class is decided by one small object at a random place; the map's peak must land on it;
- deletion / insertion: removing pixels in the map's order must destroy the class faster than random or
  inverted orders, and inserting them must restore it faster;
- model randomisation (Adebayo et al. 2018): re-initialising layers from the top must decorrelate the maps;
- agreement with a hand-written Grad-CAM and with tf-keras-vis;
- models that are not a plain chain (branches and merges, a base model nested in a Sequential, ResNet50):
  the same maps as a hand-written Grad-CAM through ``keras.Model(inputs, [layer.output, ...])``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnserve.explainer import cams, patterns
from cnnserve.explainer.faithfulness import spearman
from cnnserve.explainer.graph import ExplainableModel, NotExplainable

pytestmark = pytest.mark.slow
LAYER = "conv3"

SIZE = 32
OBJECT = 5
# Class k is decided by the shape of one small bright object; every image also holds a filled 3x3 square
# (in every class, so it carries no information) and background noise.
SHAPES = np.zeros((3, OBJECT, OBJECT), dtype=np.uint8)
SHAPES[0, 2, :] = SHAPES[0, :, 2] = 1  # plus
SHAPES[1][np.eye(OBJECT, dtype=bool)] = 1  # X
SHAPES[1][np.eye(OBJECT, dtype=bool)[::-1]] = 1
SHAPES[2, 0, :] = SHAPES[2, -1, :] = SHAPES[2, :, 0] = SHAPES[2, :, -1] = 1  # hollow square


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images uint8 [n, 32, 32, 1], labels [n], object top-left corners [n, 2] (row, col)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(n, SIZE, SIZE), dtype=np.uint8)
    y = rng.integers(0, 3, size=n)
    where = np.zeros((n, 2), dtype=int)
    for i in range(n):
        r, c = rng.integers(0, SIZE - OBJECT + 1, size=2)
        while True:  # a distractor that does not touch the object
            dr, dc = rng.integers(0, SIZE - 3 + 1, size=2)
            if dr + 3 < r - 1 or dr > r + OBJECT or dc + 3 < c - 1 or dc > c + OBJECT:
                break
        x[i, dr : dr + 3, dc : dc + 3] = 255
        patch = x[i, r : r + OBJECT, c : c + OBJECT]
        patch[SHAPES[y[i]] == 1] = 255
        where[i] = (r, c)
    return x[..., None], y, where


def planted_model(seed: int = 0):
    """uint8 [32, 32, 1] -> rescale -> conv1 -> pool1 -> conv2 -> conv3 -> global average -> softmax(3)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 1), dtype="uint8", name="images")
    x = layers.Rescaling(1 / 255, name="rescale")(images)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(images, out, name="planted")


def train_planted(seed: int = 0, n: int = 3000, epochs: int = 8):
    import keras

    x, y, _ = planted(n, seed=seed + 100)
    model = planted_model(seed)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def residual_model(seed: int = 0):
    """A Functional CNN with branches: uint8 [32, 32, 1] -> rescale -> conv1 -> residual block (res_a -> res_b,
    added to conv1, relu) -> pool -> two branches (1x1 and 3x3 conv) concatenated -> gap -> softmax(3)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    images = keras.Input((SIZE, SIZE, 1), dtype="uint8", name="images")
    x = layers.Rescaling(1 / 255, name="rescale")(images)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="res_a")(x)
    y = layers.Conv2D(8, 3, padding="same", name="res_b")(y)
    x = layers.Activation("relu", name="res_out")(layers.Add(name="res_add")([x, y]))
    x = layers.MaxPooling2D(2, name="pool")(x)
    a = layers.Conv2D(8, 1, activation="relu", name="branch_1x1")(x)
    b = layers.Conv2D(8, 3, padding="same", activation="relu", name="branch_3x3")(x)
    x = layers.Concatenate(name="mixed")([a, b])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(images, out, name="residual")


def nested_model(seed: int = 0):
    """Transfer learning's shape: a Sequential holding a Functional base (its own float input) and a head:
    uint8 [28, 28, 1] -> rescale -> base(block1_conv -> block1_pool -> block2_conv) -> flatten -> fc1 -> softmax(10)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    base_input = keras.Input((28, 28, 1), name="base_input")
    h = layers.Conv2D(8, 3, activation="relu", name="block1_conv")(base_input)
    h = layers.MaxPooling2D(2, name="block1_pool")(h)
    h = layers.Conv2D(16, 3, activation="relu", name="block2_conv")(h)
    base = keras.Model(base_input, h, name="base")
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), dtype="uint8", name="images"),
            layers.Rescaling(1 / 255, name="rescale"),
            base,
            layers.Flatten(name="flatten"),
            layers.Dense(16, activation="relu", name="fc1"),
            layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="transfer",
    )


@pytest.fixture(scope="module")
def trained():
    model = train_planted(seed=0)
    x, y, where = planted(200, seed=7)
    accuracy = (model.predict(x, verbose=0).argmax(axis=1) == y).mean()
    assert accuracy >= 0.98, f"the planted-object model did not learn the task (accuracy {accuracy:.3f})"
    return model, ExplainableModel(model), (x, y, where)


def _hit_rate(maps: np.ndarray, where: np.ndarray, margin: int = 2) -> float:
    """Share of maps whose maximum lies on the object (its 5x5 box grown by ``margin`` pixels)."""
    hits = 0
    for m, (r, c) in zip(maps, where, strict=True):
        pr, pc = np.unravel_index(np.argmax(m), m.shape)
        hits += (r - margin <= pr < r + OBJECT + margin) and (c - margin <= pc < c + OBJECT + margin)
    return hits / len(maps)


@pytest.mark.parametrize("method", cams.METHODS)
def test_planted_object_is_found(trained, method):
    _, em, (x, y, where) = trained
    result = cams.heatmaps(em, x, LAYER, method)
    assert result.heatmaps.shape == (len(x), SIZE, SIZE) and result.heatmaps.dtype == np.float32
    assert np.isfinite(result.heatmaps).all() and result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    np.testing.assert_array_equal(result.target, y)  # top-1 is the true class on this easy task
    rate = _hit_rate(result.heatmaps, where)
    centre = np.zeros_like(result.heatmaps)
    centre[:, SIZE // 2, SIZE // 2] = 1.0
    baseline = _hit_rate(centre, where)
    assert rate >= 0.95, f"{method}: the map's peak is on the object in {rate:.1%} of images"
    assert baseline <= 0.25 and rate - baseline >= 0.7, f"centre baseline {baseline:.1%} vs {method} {rate:.1%}"


def _curves(em: ExplainableModel, x: np.ndarray, target: np.ndarray, orders: np.ndarray, insert: bool) -> np.ndarray:
    """Target probability as pixels are deleted (set to 0) or inserted (into a black image) in ``orders``,
    over the first quarter of the pixels (the object covers 2.4 % of the image; past that every order
    has reached the floor where the object is gone or complete, which only blurs the comparison)."""
    fractions = np.linspace(0.0, 0.25, 26)
    n_pix = SIZE * SIZE
    probabilities = em.probabilities()
    curves = np.zeros((len(x), len(fractions)))
    for i in range(len(x)):
        steps = []
        for f in fractions:
            chosen = orders[i, : int(round(f * n_pix))]
            mask = np.zeros(n_pix, dtype=bool)
            mask[chosen] = True
            mask = mask.reshape(SIZE, SIZE, 1)
            steps.append(np.where(mask, x[i], 0) if insert else np.where(mask, 0, x[i]))
        p = probabilities(tf.constant(np.stack(steps).astype(np.float32))).numpy()
        curves[i] = p[:, target[i]]
    return curves


def test_deletion_and_insertion_follow_the_map(trained):
    _, em, (x, y, _) = trained
    x, y = x[:40], y[:40]
    maps = cams.heatmaps(em, x, LAYER, "gradcam").heatmaps.reshape(len(x), -1)
    rng = np.random.default_rng(0)
    tie = rng.random(maps.shape)  # random order among equal values
    by_map = np.stack([np.lexsort((tie[i], -maps[i])) for i in range(len(x))])
    inverted = np.stack([np.lexsort((tie[i], maps[i])) for i in range(len(x))])
    random = np.stack([rng.permutation(SIZE * SIZE) for _ in range(len(x))])

    def auc(orders, insert):
        return _curves(em, x, y, orders, insert).mean()

    deletion = {name: auc(o, False) for name, o in (("map", by_map), ("random", random), ("inverted", inverted))}
    insertion = {name: auc(o, True) for name, o in (("map", by_map), ("random", random), ("inverted", inverted))}
    print("deletion AUC", deletion, "insertion AUC", insertion)
    assert deletion["map"] < deletion["random"] - 0.1 and deletion["map"] < deletion["inverted"] - 0.1, deletion
    assert insertion["map"] > insertion["random"] + 0.1 and insertion["map"] > insertion["inverted"] + 0.1, insertion


def test_model_randomisation_decorrelates_the_maps(trained):
    model, em, (x, _, _) = trained
    x = x[:30]
    trained_maps = cams.heatmaps(em, x, LAYER, "gradcam").heatmaps
    # Self-agreement: the trained model's maps for the same images with faint noise added.
    noise = np.random.default_rng(1).integers(-3, 4, size=x.shape)
    noisy = np.clip(x.astype(int) + noise, 0, 255).astype(np.uint8)
    noisy_maps = cams.heatmaps(em, noisy, LAYER, "gradcam").heatmaps
    self_agreement = np.mean([spearman(a, b) for a, b in zip(trained_maps, noisy_maps, strict=True)])
    assert self_agreement > 0.8

    fresh = keras.models.clone_model(model)  # same architecture, freshly initialised weights
    fresh.set_weights(model.get_weights())
    randomised = []
    for name in ("probabilities", "conv3", "conv2", "conv1"):  # cascading, from the top down
        target, reference = fresh.get_layer(name), keras.models.clone_model(model).get_layer(name)
        target.set_weights([w.numpy() for w in reference.weights])
        maps = cams.heatmaps(ExplainableModel(fresh), x, LAYER, "gradcam").heatmaps
        randomised.append(np.mean([spearman(a, b) for a, b in zip(trained_maps, maps, strict=True)]))
    assert max(randomised) < 0.5 * self_agreement, (self_agreement, randomised)
    # The served model itself was never touched.
    np.testing.assert_array_equal(cams.heatmaps(em, x, LAYER, "gradcam").heatmaps, trained_maps)


def test_gradcam_equals_a_hand_written_one_on_the_pre_softmax_score(trained):
    model, em, (x, _, _) = trained
    x = x[:8]
    assert em.pre_softmax
    features = keras.Model(model.inputs, [model.get_layer(LAYER).output, model.get_layer("gap").output])
    dense = model.get_layer("probabilities")
    with tf.GradientTape() as tape:
        conv, pooled = features(x)
        tape.watch(conv)
        pooled = tf.reduce_mean(conv, axis=[1, 2])  # the same GAP, on the watched tensor
        logits = pooled @ dense.kernel + dense.bias
        top = tf.argmax(logits, axis=1)
        score = tf.gather(logits, top, axis=1, batch_dims=1)
    grads = tape.gradient(score, conv).numpy()
    expected = np.maximum((conv.numpy() * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    got = np.maximum(cams.heatmaps(em, x, LAYER, "gradcam").low_res, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_agrees_with_tf_keras_vis(trained):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    model, em, (x, _, _) = trained
    x = x[:16]
    ours = cams.heatmaps(em, x, LAYER, "gradcam")
    # tf-keras-vis 0.8.7 gets None gradients through a uint8 model input under Keras 3, so it is given the
    # same layers (shared weights) behind a float32 input.
    h = images = keras.Input((SIZE, SIZE, 1), dtype="float32")
    for layer in model.layers[1:]:
        h = layer(h)
    float_model = keras.Model(images, h)
    theirs = Gradcam(float_model, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore(list(ours.target)),
        x.astype(np.float32),
        penultimate_layer=LAYER,
        expand_cam=False,
        normalize_cam=False,
    )
    theirs = np.asarray(theirs)
    # At the layer's resolution the maps are the same computation: equal to float32 round-off.
    np.testing.assert_allclose(np.maximum(ours.low_res, 0), theirs, rtol=1e-4, atol=1e-5 * theirs.max())
    # Still a copy: the served model keeps its softmax.
    assert model.get_layer("probabilities").activation.__name__ == "softmax"


def test_flat_map_gives_zeros_not_nan():
    images = keras.Input((SIZE, SIZE, 1), dtype="uint8")
    h = keras.layers.Rescaling(1 / 255)(images)
    h = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer="zeros", name="conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros", name="probabilities")(h)
    em = ExplainableModel(keras.Model(images, out))  # activations and gradients are exactly zero
    x, _, _ = planted(4, seed=3)
    for method in cams.METHODS:
        maps = cams.heatmaps(em, x, "conv", method).heatmaps
        assert np.isfinite(maps).all() and not maps.any(), method


def test_filter_patterns_raise_their_filter_and_do_not_depend_on_the_batch(trained):
    _, em, _ = trained
    params = patterns.PatternParams(steps=30, step_size=5.0, seed=3)
    start, _ = patterns.ascend(em, "conv2", [1, 4, 7], patterns.PatternParams(steps=0, seed=3))
    x, activation = patterns.ascend(em, "conv2", [1, 4, 7], params)
    before = em.filter_activation("conv2")(tf.constant(start), tf.constant([1, 4, 7], dtype=tf.int32)).numpy()
    assert (activation > before).all() and (activation > 0).any(), (before, activation)
    alone, alone_activation = patterns.ascend(em, "conv2", [4], params)
    np.testing.assert_allclose(alone[0], x[1], rtol=1e-3, atol=1e-2)
    regular, regular_activation = patterns.ascend(
        em, "conv2", [1, 4, 7], patterns.PatternParams(steps=30, step_size=5.0, regularized=True, seed=3)
    )
    assert (regular_activation > before).all() and np.isfinite(regular).all()

    cache = patterns.PatternCache()
    first = patterns.filter_patterns(em, ("planted", "1"), "conv2", [4, 1], params, cache)
    again = patterns.filter_patterns(em, ("planted", "1"), "conv2", [1, 9, 4], params, cache)
    assert [p.cached for p in first] == [False, False] and [p.cached for p in again] == [True, False, True]
    np.testing.assert_array_equal(first[0].image, again[2].image)
    assert first[0].image.dtype == np.uint8 and first[0].image.shape == (SIZE, SIZE, 1)


# ---- models that are not a plain chain -------------------------------------------------------------------


def _hand_written_gradcam(features, head, x):
    """Grad-CAM written out: ``features(x)`` -> (A, the final Dense's input h); logits = head(h); the gradient of
    each image's top-1 logit with respect to A, spatially averaged, weighs A's channels. Raw map (no ReLU)."""
    with tf.GradientTape() as tape:
        a, h = features(x)
        logits = head(h)
        top = tf.argmax(logits, axis=1)
        score = tf.gather(logits, top, axis=1, batch_dims=1)
    grads = tape.gradient(score, a)
    assert grads is not None
    a, grads = a.numpy(), grads.numpy()
    return (a * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), top.numpy()


def _logits(dense):
    return lambda h: h @ dense.kernel + dense.bias


def _assert_same_maps(em, x, layer, features, head, model):
    got = cams.heatmaps(em, x, layer, "gradcam")
    expected, top = _hand_written_gradcam(features, head, x)
    assert expected.std() > 0 and em.pre_softmax
    np.testing.assert_array_equal(got.target, top)
    np.testing.assert_allclose(got.low_res, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(got.probabilities, model(x, training=False).numpy(), rtol=1e-4, atol=1e-6)
    assert np.isfinite(got.heatmaps).all() and got.heatmaps.max() > 0.5


def test_functional_model_with_branches(tmp_path):
    model = residual_model(seed=1)
    em = ExplainableModel(model)
    names = [spec.name for spec in em.layers]
    assert {"res_add", "res_out", "branch_1x1", "branch_3x3", "mixed"} <= set(names)
    assert names.index("res_add") < names.index("pool") < names.index("mixed") < names.index("probabilities")
    assert em.layer("mixed").output_shape == (-1, SIZE // 2, SIZE // 2, 16)
    x, _, _ = planted(6, seed=5)
    dense = model.get_layer("probabilities")
    for layer in ("res_out", "conv1", "mixed", "branch_1x1"):  # before, inside and after the branches
        features = keras.Model(model.inputs[0], [model.get_layer(layer).output, dense.input])
        _assert_same_maps(em, x, layer, features, _logits(dense), model)
    for method in cams.METHODS:
        assert np.isfinite(cams.heatmaps(em, x, "res_out", method).heatmaps).all(), method
    acts = em.activations("res_add")(tf.constant(x.astype(np.float32))).numpy()
    expected = keras.Model(model.inputs[0], model.get_layer("res_add").output)(x).numpy()
    np.testing.assert_allclose(acts, expected, rtol=1e-5, atol=1e-5)
    # Filter patterns stop at their layer, so a pattern size the rest of the model would not accept works.
    images, activation = patterns.ascend(em, "res_out", [0, 3], patterns.PatternParams(steps=3, size=24, seed=1))
    assert images.shape == (2, 24, 24, 1) and np.isfinite(activation).all()
    # A feature extractor without a classifier head (4-D output) still serves activations and filter patterns.
    headless = ExplainableModel(keras.Model(model.inputs[0], model.get_layer("mixed").output))
    assert headless.layer("mixed").spatial and not headless.pre_softmax
    assert patterns.ascend(headless, "branch_3x3", [1], patterns.PatternParams(steps=2, seed=1))[0].shape == (
        1, SIZE, SIZE, 1,
    )  # fmt: skip
    # As served: saved as model.keras and loaded back.
    model.save(tmp_path / "model.keras")
    loaded = ExplainableModel(keras.saving.load_model(tmp_path / "model.keras", compile=False))
    np.testing.assert_allclose(
        cams.heatmaps(loaded, x, "res_out").heatmaps, cams.heatmaps(em, x, "res_out").heatmaps, atol=1e-6
    )


def test_base_model_nested_in_a_sequential(tmp_path):
    model = nested_model(seed=2)
    em = ExplainableModel(model)
    names = [spec.name for spec in em.layers]
    assert names == ["rescale", "block1_conv", "block1_pool", "block2_conv", "flatten", "fc1", "probabilities"]
    assert em.default_heatmap_layer() == "block2_conv"
    base, rescale, flatten, fc1, dense = (
        model.get_layer(n) for n in ("base", "rescale", "flatten", "fc1", "probabilities")
    )
    x = np.load(__import__("support").DIGITS)["x"][:6][..., None]
    for layer in ("block2_conv", "block1_conv"):
        inner = keras.Model(base.inputs, [base.get_layer(layer).output, base.output])

        def features(images, inner=inner):
            return inner(rescale(images))

        _assert_same_maps(em, x, layer, features, lambda h: _logits(dense)(fc1(flatten(h))), model)
    model.save(tmp_path / "model.keras")
    loaded = ExplainableModel(keras.saving.load_model(tmp_path / "model.keras", compile=False))
    assert [spec.name for spec in loaded.layers] == names
    np.testing.assert_allclose(
        cams.heatmaps(loaded, x, "block2_conv").heatmaps, cams.heatmaps(em, x, "block2_conv").heatmaps, atol=1e-6
    )


def test_resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    em = ExplainableModel(model)
    assert len(em.layers) == len(model.layers) - 1  # every layer but the input, each once
    x = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3)).astype(np.uint8)
    dense = model.get_layer("predictions")
    layer = "conv5_block3_out"  # after the last residual addition
    features = keras.Model(model.inputs[0], [model.get_layer(layer).output, dense.input])
    _assert_same_maps(em, x.astype(np.float32), layer, features, _logits(dense), model)


def test_models_that_cannot_be_walked_are_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, name="conv")
            self.dense = keras.layers.Dense(3, activation="softmax")

        def call(self, x):
            return self.dense(tf.reduce_mean(self.conv(x), axis=[1, 2]))

    subclassed = Subclassed()
    subclassed(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(NotExplainable):
        ExplainableModel(subclassed)
    a = keras.Input((8, 8, 1))
    two = keras.Model(a, [keras.layers.Conv2D(2, 3)(a), keras.layers.Flatten()(a)])
    with pytest.raises(NotExplainable, match="outputs"):
        ExplainableModel(two)
