"""A served Keras model, re-run for explanation: float input, any layer's output, the pre-softmax score.

The served model takes uint8 pixels and ends in a softmax. Gradients need a float input and are better
taken on the class score before the softmax (the softmax couples every class). Building a second
``keras.Model`` from ``m.inputs`` does not work for Sequential models loaded from ``.keras`` (the gradients
come back None), so the layers are called again, in order, on a float tensor inside ``tf.function``s: the
served model's layers and weights are shared, never copied or changed. The result is checked against the
model's own output when it is built, so a model that is not a plain chain of layers is refused up front.

Every function is traced once per model and layer with a batch-polymorphic signature and cached.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


class NotExplainable(ValueError):
    """The model cannot be re-run layer by layer (branches, nested models, ...)."""


@dataclass(frozen=True)
class LayerSpec:
    name: str
    class_name: str
    output_shape: tuple[int, ...]  # -1 for the batch dimension (and unknown sizes)
    index: int  # position among the explainable model's layers

    @property
    def spatial(self) -> bool:
        return len(self.output_shape) == 4

    @property
    def channels(self) -> int:
        return int(self.output_shape[-1])


def _shape(layer) -> tuple[int, ...]:
    shape = layer.output.shape
    return tuple(-1 if d is None else int(d) for d in shape)


def _is_softmax(fn) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


class ExplainableModel:
    """Layer-by-layer access to a Keras model. Thread-safe for building functions; calls may run anywhere."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        if not self.chain:
            raise NotExplainable(f"model {model.name!r} has no layers")
        shape = tuple(model.inputs[0].shape[1:])
        if len(shape) != 3 or any(d is None for d in shape):
            raise NotExplainable(f"model {model.name!r}: expected an image input [H, W, C], got {shape}")
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in shape)  # type: ignore[assignment]
        self.layers = [LayerSpec(lay.name, lay.__class__.__name__, _shape(lay), i) for i, lay in enumerate(self.chain)]
        self._by_name = {spec.name: spec for spec in self.layers}
        self.pre_softmax = self._find_logits()
        self._functions: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self._check_against_model()

    # ---- structure -------------------------------------------------------------------------------------

    def layer(self, name: str) -> LayerSpec | None:
        return self._by_name.get(name)

    @property
    def spatial_layers(self) -> list[LayerSpec]:
        return [spec for spec in self.layers if spec.spatial]

    def default_heatmap_layer(self) -> str:
        """The last convolution layer (else the last spatial layer)."""
        convs = [s for s in self.spatial_layers if "Conv" in s.class_name]
        chosen = convs or self.spatial_layers
        return chosen[-1].name if chosen else ""

    def _find_logits(self) -> bool:
        """How the tail produces the pre-softmax score: drop a final Softmax, or a Dense's softmax."""
        last = self.chain[-1]
        self._drop_last = False
        self._dense_logits = False
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
        ):
            self._drop_last = True
        elif type(last) is keras.layers.Dense and _is_softmax(last.activation) and not last.lora_enabled:
            self._dense_logits = True
        return self._drop_last or self._dense_logits

    # ---- eager building blocks (called inside tf.functions) ---------------------------------------------

    def _run(self, x, start: int, stop: int):
        for layer in self.chain[start:stop]:
            x = layer(x, training=False)
        return x

    def _head(self, x, index: int):
        """Output of layer ``index`` for float pixels ``x``."""
        return self._run(x, 0, index + 1)

    def _scores(self, h, index: int):
        """From layer ``index``'s output to (score, probabilities): the score is pre-softmax when possible."""
        n = len(self.chain)
        if self._drop_last:
            logits = self._run(h, index + 1, n - 1)
            return logits, tf.nn.softmax(logits, axis=-1)
        if self._dense_logits:
            h = self._run(h, index + 1, n - 1) if index < n - 1 else h
            last = self.chain[-1]
            logits = tf.matmul(h, last.kernel)
            if last.bias is not None:
                logits = logits + last.bias
            return logits, tf.nn.softmax(logits, axis=-1)
        probabilities = self._run(h, index + 1, n)
        return probabilities, probabilities

    def _check_against_model(self) -> None:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(2, *self.input_shape)).astype(np.float32)
        try:
            _, probabilities = self._scores(self._head(tf.constant(x), 0), 0)
            expected = self.model(tf.cast(x, self.model.inputs[0].dtype), training=False)
        except Exception as exc:  # layers that need several inputs, nested models, ...
            raise NotExplainable(f"model {self.model.name!r} is not a plain chain of layers: {exc}") from exc
        if isinstance(expected, (list, tuple, dict)):
            raise NotExplainable(f"model {self.model.name!r} has several outputs")
        if not np.allclose(probabilities.numpy(), np.asarray(expected), atol=1e-4):
            raise NotExplainable(
                f"model {self.model.name!r}: running its layers in order does not reproduce its output "
                "(branches or shared layers?)"
            )

    # ---- compiled functions -----------------------------------------------------------------------------

    def _function(self, key: tuple, build):
        fn = self._functions.get(key)
        if fn is None:
            with self._lock:
                fn = self._functions.get(key)
                if fn is None:
                    fn = build()
                    self._functions[key] = fn
        return fn

    def _image_spec(self, spatial: tuple = ()):
        h, w, c = self.input_shape
        dims = spatial or (h, w)
        return tf.TensorSpec([None, *dims, c], tf.float32)

    def gradients(self, layer: str):
        """f(x float [B,H,W,C], target int32 [B], -1 = top-1) -> (activations, gradients, probabilities, target)."""
        index = self._by_name[layer].index

        def build():
            @tf.function(input_signature=[self._image_spec(), tf.TensorSpec([None], tf.int32)])
            def fn(x, target):
                with tf.GradientTape() as tape:
                    a = self._head(x, index)
                    tape.watch(a)
                    score, probabilities = self._scores(a, index)
                    top1 = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
                    chosen = tf.where(target < 0, top1, target)
                    picked = tf.gather(score, chosen, axis=1, batch_dims=1)
                grads = tape.gradient(picked, a)
                return a, grads, probabilities, chosen

            return fn

        return self._function(("gradients", layer), build)

    def activations(self, layer: str):
        """f(x float [B,H,W,C]) -> layer output."""
        index = self._by_name[layer].index

        def build():
            @tf.function(input_signature=[self._image_spec()])
            def fn(x):
                return self._head(x, index)

            return fn

        return self._function(("activations", layer), build)

    def probabilities(self):
        """f(x float [B,H,W,C]) -> class probabilities (the served output)."""

        def build():
            @tf.function(input_signature=[self._image_spec()])
            def fn(x):
                return self._scores(self._head(x, 0), 0)[1]

            return fn

        return self._function(("probabilities",), build)

    def ascent_step(self, layer: str, regularized: bool):
        """f(x [F,S,S,C], filters int32 [F], transforms [F,8], step) -> (x', mean activation of each filter).

        One gradient-ascent step for F patterns at once: the loss of pattern f is the mean of its filter's
        output; its gradient is divided by its RMS + 1e-5 (the reference) and added times ``step``.
        With ``regularized`` each pattern is first warped by its projective transform (jitter, scale,
        rotation); the gradient flows back through the warp to the pattern itself.
        """
        index = self._by_name[layer].index
        channels = self.input_shape[2]

        def build():
            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, None, None, channels], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                    tf.TensorSpec([None, 8], tf.float32),
                    tf.TensorSpec([], tf.float32),
                ]
            )
            def fn(x, filters, transforms, step):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    seen = x
                    if regularized:
                        seen = tf.raw_ops.ImageProjectiveTransformV3(
                            images=x,
                            transforms=transforms,
                            output_shape=tf.shape(x)[1:3],
                            fill_value=0.0,
                            interpolation="BILINEAR",
                            fill_mode="REFLECT",
                        )
                    a = self._head(seen, index)
                    per_channel = tf.reduce_mean(a, axis=[1, 2])  # [F, K]
                    activation = tf.gather(per_channel, filters, axis=1, batch_dims=1)  # [F]
                    loss = tf.reduce_sum(activation)
                grads = tape.gradient(loss, x)
                rms = tf.sqrt(tf.reduce_mean(tf.square(grads), axis=[1, 2, 3], keepdims=True))
                return x + step * grads / (rms + 1e-5), activation

            return fn

        return self._function(("ascent", layer, regularized), build)

    def filter_activation(self, layer: str):
        """f(x [F,S,S,C], filters [F]) -> mean activation of each pattern's filter (no transform)."""
        index = self._by_name[layer].index
        channels = self.input_shape[2]

        def build():
            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, None, None, channels], tf.float32),
                    tf.TensorSpec([None], tf.int32),
                ]
            )
            def fn(x, filters):
                per_channel = tf.reduce_mean(self._head(x, index), axis=[1, 2])
                return tf.gather(per_channel, filters, axis=1, batch_dims=1)

            return fn

        return self._function(("filter_activation", layer), build)
