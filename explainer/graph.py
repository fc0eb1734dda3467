"""A served Keras model, re-run for explanation: float input, any layer's output, the pre-softmax score.

The served model takes uint8 pixels and ends in a softmax. Gradients need a float input (calling a Keras
model casts its input to the input layer's dtype, and a uint8 cast cuts the gradient) and are better taken
on the class score before the softmax (the softmax couples every class). So the served model's own layers
are called again on a float32 tensor inside ``tf.function``s, following the model's graph:

- a Sequential model layer by layer;
- a Functional model node by node in its topological order, so branches and merges work (ResNet's residual
  additions, Inception's concatenations);
- a model used as a layer (a keras.applications base inside a Sequential or Functional model, as in
  transfer learning) is entered and its own layers run in turn: every layer of the base is addressable by
  its own name (``block5_conv3``), as if the model were flat.

The layers and weights are the served model's, shared, never copied or changed. The walk can stop as soon
as the requested layer's output exists (activations and filter patterns need nothing after it), and the
final softmax (a ``Softmax``/``Activation("softmax")`` layer, or a ``Dense`` with softmax activation) is
replaced by its logits for the score. The result is checked against the model's own output when the model
is loaded, so a model the walk cannot reproduce (subclassed models, several inputs or outputs) is refused
up front.

Every function is traced once per model and layer with a batch-polymorphic signature and cached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from cnnserve.service.errors import InvalidArgument

log = logging.getLogger(__name__)


class NotExplainable(ValueError):
    """The model's layers cannot be re-run on a float input (subclassed model, several inputs, ...)."""


@dataclass(frozen=True)
class LayerSpec:
    name: str
    class_name: str
    output_shape: tuple[int, ...]  # -1 for the batch dimension (and unknown sizes)
    index: int  # position in the order the layers run (a nested model's layers in place of the model)

    @property
    def spatial(self) -> bool:
        return len(self.output_shape) == 4

    @property
    def channels(self) -> int:
        return int(self.output_shape[-1])


def _is_softmax(fn) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


def _final_layer(model: keras.Model):
    """The layer that produces the model's output, looking inside nested models."""
    if isinstance(model, keras.Sequential):
        if not model.layers:
            raise NotExplainable(f"model {model.name!r} has no layers")
        layer = model.layers[-1]
    else:
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) != 1:
            raise NotExplainable(f"model {model.name!r} has {len(outputs)} outputs; one is explainable")
        layer = outputs[0]._keras_history.operation
    return _final_layer(layer) if isinstance(layer, keras.Model) else layer


class _Reached(Exception):
    """Ends a walk once the requested layer's output exists."""

    def __init__(self, value) -> None:
        super().__init__("reached")
        self.value = value


@dataclass
class _Run:
    """The outputs one walk collected."""

    captured: object = None
    score: object = None
    probabilities: object = None


class ExplainableModel:
    """Layer-level access to a Keras model. Thread-safe for building functions; calls may run anywhere."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) != 1:
            raise NotExplainable(f"model {model.name!r} has {len(inputs)} inputs; one image input is explainable")
        shape = tuple(inputs[0].shape[1:])
        if len(shape) != 3 or any(d is None for d in shape):
            raise NotExplainable(f"model {model.name!r}: expected an image input [H, W, C], got {shape}")
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in shape)  # type: ignore[assignment]
        self._final = _final_layer(model)
        self.pre_softmax = self._find_logits()
        self._functions: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self.layers = self._check_against_model()
        self._by_name = {spec.name: spec for spec in self.layers}

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
        """How the final layer yields the pre-softmax score: a Softmax's input, or a Dense's logits."""
        last = self._final
        self._softmax_input = isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
        )
        self._dense_logits = type(last) is keras.layers.Dense and _is_softmax(last.activation) and not last.lora_enabled
        return self._softmax_input or self._dense_logits

    # ---- the walk (eager, or traced inside tf.functions) ------------------------------------------------

    def _walk(self, model: keras.Model, x, call: Callable):
        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = call(layer, x)
            return x
        if not hasattr(model, "_run_through_graph") or not getattr(model, "_nodes_by_depth", None):
            raise NotExplainable(f"model {model.name!r} is subclassed (no layer graph to follow)")
        outputs = keras.tree.flatten(model._run_through_graph([x], operation_fn=lambda op: op, call_fn=call))
        if len(outputs) != 1:
            raise NotExplainable(f"model {model.name!r} has {len(outputs)} outputs; one is explainable")
        return outputs[0]

    def _forward(self, x, capture: str = "", watch: Callable | None = None, stop: bool = False, record=None) -> _Run:
        """Run the served layers on float pixels ``x``. ``capture``: keep that layer's output (``watch`` it on a
        tape; with ``stop``, run nothing after it). ``record``: a list to append (layer, output) to."""
        run = _Run()

        def call(op, *args, **kwargs):
            if isinstance(op, keras.Model):  # a nested model: run its layers in place
                if len(args) != 1:
                    raise NotExplainable(f"nested model {op.name!r} takes {len(args)} inputs")
                return self._walk(op, args[0], call)
            if not isinstance(op, keras.layers.Layer):  # an operation of a Functional graph (keras.ops)
                return op(*args, **kwargs)
            kwargs["training"] = False
            if op is self._final and self.pre_softmax:
                h = args[0]
                if self._softmax_input:
                    run.score, y = h, op(*args, **kwargs)
                else:
                    logits = tf.tensordot(h, op.kernel, axes=1)
                    run.score = logits + op.bias if op.bias is not None else logits
                    y = tf.nn.softmax(run.score, axis=-1)
            else:
                y = op(*args, **kwargs)
            if record is not None:
                record.append((op, y))
            if capture and op.name == capture and run.captured is None:
                if watch is not None:
                    watch(y)
                run.captured = y
                if stop:
                    raise _Reached(y)
            return y

        try:
            run.probabilities = self._walk(self.model, x, call)
        except _Reached:
            return run
        if run.score is None:
            run.score = run.probabilities
        return run

    def _check_against_model(self) -> list[LayerSpec]:
        """Run the walk once on random pixels: it must reproduce the model's output. Returns the layers."""
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(2, *self.input_shape)).astype(np.float32)
        record: list = []
        try:
            probabilities = self._forward(tf.constant(x), record=record).probabilities
            expected = self.model(tf.cast(x, self.model.inputs[0].dtype), training=False)
        except NotExplainable:
            raise
        except Exception as exc:  # layers that need several inputs, ...
            raise NotExplainable(f"model {self.model.name!r} cannot be re-run layer by layer: {exc}") from exc
        if isinstance(expected, (list, tuple, dict)):
            raise NotExplainable(f"model {self.model.name!r} has several outputs")
        if not np.allclose(probabilities.numpy(), np.asarray(expected), rtol=1e-3, atol=1e-4):
            raise NotExplainable(
                f"model {self.model.name!r}: running its layers on a float input does not reproduce its output"
            )
        layers: list[LayerSpec] = []
        seen: set[str] = set()
        for layer, y in record:
            if layer.name in seen:  # a shared layer (or a name reused inside a nested model): the first one
                continue
            seen.add(layer.name)
            shape = (-1, *(int(d) for d in y.shape[1:]))
            layers.append(LayerSpec(layer.name, layer.__class__.__name__, shape, len(layers)))
        return layers

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

    def _output(self, x, layer: str):
        """Layer ``layer``'s output for float pixels ``x`` (nothing after it runs)."""
        return self._forward(x, capture=layer, stop=True).captured

    def gradients(self, layer: str):
        """f(x float [B,H,W,C], target int32 [B], -1 = top-1) -> (activations, gradients, probabilities, target)."""

        def build():
            @tf.function(input_signature=[self._image_spec(), tf.TensorSpec([None], tf.int32)])
            def fn(x, target):
                with tf.GradientTape() as tape:
                    run = self._forward(x, capture=layer, watch=tape.watch)
                    top1 = tf.argmax(run.probabilities, axis=-1, output_type=tf.int32)
                    chosen = tf.where(target < 0, top1, target)
                    picked = tf.gather(run.score, chosen, axis=1, batch_dims=1)
                grads = tape.gradient(picked, run.captured)
                if grads is None:
                    raise InvalidArgument(f"the class score does not depend on layer {layer!r}; choose another layer")
                return run.captured, grads, run.probabilities, chosen

            return fn

        return self._function(("gradients", layer), build)

    def activations(self, layer: str):
        """f(x float [B,H,W,C]) -> layer output."""

        def build():
            @tf.function(input_signature=[self._image_spec()])
            def fn(x):
                return self._output(x, layer)

            return fn

        return self._function(("activations", layer), build)

    def probabilities(self):
        """f(x float [B,H,W,C]) -> class probabilities (the served output)."""

        def build():
            @tf.function(input_signature=[self._image_spec()])
            def fn(x):
                return self._forward(x).probabilities

            return fn

        return self._function(("probabilities",), build)

    def ascent_step(self, layer: str, regularized: bool):
        """f(x [F,S,S,C], filters int32 [F], transforms [F,8], step) -> (x', mean activation of each filter).

        One gradient-ascent step for F patterns at once: the loss of pattern f is the mean of its filter's
        output; its gradient is divided by its RMS + 1e-5 (the reference) and added times ``step``.
        With ``regularized`` each pattern is first warped by its projective transform (jitter, scale,
        rotation); the gradient flows back through the warp to the pattern itself.
        """
        channels = self.input_shape[2]

        def build():
            @tf.function(input_signature=[*_patterns_signature(channels), tf.TensorSpec([None, 8]), tf.TensorSpec([])])
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
                    a = self._output(seen, layer)
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
        channels = self.input_shape[2]

        def build():
            @tf.function(input_signature=_patterns_signature(channels))
            def fn(x, filters):
                per_channel = tf.reduce_mean(self._output(x, layer), axis=[1, 2])
                return tf.gather(per_channel, filters, axis=1, batch_dims=1)

            return fn

        return self._function(("filter_activation", layer), build)


def _patterns_signature(channels: int) -> list:
    """What the filter-pattern functions take first: F patterns [F, S, S, C] and their filters [F]."""
    return [tf.TensorSpec([None, None, None, channels], tf.float32), tf.TensorSpec([None], tf.int32)]
