"""Tiny Keras models and planted-object images for the explainer tests (TensorFlow imported lazily)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def tiny_digit_model(seed: int = 0):
    """An untrained digit CNN of the served kind: uint8 [28, 28, 1] -> softmax(10)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    images = keras.Input((28, 28, 1), dtype="uint8", name="images")
    x = layers.Rescaling(1 / 255, name="rescale")(images)
    x = layers.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(images, out, name="tiny_digits")


def add_keras_model(folder: Path, model, version: int = 1) -> Path:
    """Save ``model`` as NAME/VERSION/model.keras beside a repository model written by support.write_model."""
    path = folder / str(version) / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation with average ranks for ties; 0 when either map is constant (no structure)."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        return (np.bincount(inverse, r) / counts)[inverse]

    ra, rb = ranks(a.ravel()), ranks(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


class ExplainerProcess:
    """`cnnserve explainer` as a real subprocess on 127.0.0.1; reads the port from its ready line."""

    def __init__(self, repository: Path, port: int = 0, *extra: str) -> None:
        import sys

        self.args = [
            sys.executable, "-m", "cnnserve.cli", "explainer", "--model-repository", str(repository),
            "--host", "127.0.0.1", "--grpc-port", str(port), *extra,
        ]  # fmt: skip
        self.proc = None
        self.grpc_port = 0

    def start(self, timeout: float = 120) -> ExplainerProcess:
        import os
        import subprocess

        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        from cnnserve.process import wait_ready

        self.grpc_port = wait_ready(self.proc, timeout)["grpc_port"]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


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
