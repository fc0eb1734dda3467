"""Filter patterns: inputs that maximise a filter's mean activation, found by gradient ascent on the input.

The reference (section 6): start from uniform noise (here around mid-grey, see START_GREY), 50 steps of ``x += 0.9 * g / (rms(g) + 1e-5)``
where g is the gradient of the filter's mean output, then display as centre / std 0.1 / +0.5 / clip / x255.
The regularised form warps the pattern by a random jitter, scale and rotation before every step, which
suppresses the high-frequency noise plain ascent produces (Mordvintsev et al., Olah et al. 2017).

Many filters run as one batch. Each filter's noise and transforms come from its own random stream
(seeded by the request's seed and the filter index), so a pattern does not depend on which other filters
were in its batch, and results can be cached.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from cnnserve.explainer.graph import ExplainableModel
from cnnserve.explainer.render import pattern_to_uint8

DEFAULT_STEPS = 50
# The reference starts from U[0, 1) in VGG16's unscaled 0-255 input, i.e. almost black. Behind a ReLU many
# filters are exactly zero there and get no gradient at all, so the ascent starts from mid-grey noise.
START_GREY, START_NOISE = 127.5, 20.0
DEFAULT_STEP_SIZE = 0.9
JITTER = 0.04  # of the side, in pixels each way
SCALES = (0.95, 1.05)
MAX_DEGREES = 5.0


@dataclass(frozen=True)
class PatternParams:
    steps: int = DEFAULT_STEPS
    step_size: float = DEFAULT_STEP_SIZE
    size: int = 0  # 0: the model's input size
    regularized: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Pattern:
    filter: int
    image: np.ndarray  # uint8 [S, S, C], displayed as the reference does
    activation: float  # the filter's mean activation on the final (unwarped) pattern
    cached: bool = False


def _transform(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random projective transform (output -> input coordinates) about the centre: jitter, scale, rotation."""
    jitter = max(1.0, JITTER * size)
    tx, ty = rng.uniform(-jitter, jitter, size=2)
    scale = rng.uniform(*SCALES)
    theta = math.radians(rng.uniform(-MAX_DEGREES, MAX_DEGREES))
    c = (size - 1) / 2.0
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    # input = centre + R(theta) / scale @ (output - centre - t)
    a0, a1, b0, b1 = cos, -sin, sin, cos
    a2 = c - a0 * (c + tx) - a1 * (c + ty)
    b2 = c - b0 * (c + tx) - b1 * (c + ty)
    return np.array([a0, a1, a2, b0, b1, b2, 0.0, 0.0], dtype=np.float32)


def ascend(
    model: ExplainableModel,
    layer: str,
    filters: list[int],
    params: PatternParams,
    *,
    deadline: Callable[[], bool] | None = None,
    stop: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the ascent for ``filters`` as one batch. Returns (float patterns [F,S,S,C], activations [F]).

    ``deadline()`` is checked between steps; when it returns True the ascent stops with TimeoutError.
    ``stop()``, when given, is called between steps too, and raises to end the ascent there.
    """
    size = params.size or model.input_shape[0]
    channels = model.input_shape[2]
    streams = [np.random.default_rng([params.seed, f]) for f in filters]
    x = np.stack(
        [START_GREY + START_NOISE * (rng.random((size, size, channels), dtype=np.float32) - 0.5) for rng in streams]
    )
    identity = np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float32)
    step_fn = model.ascent_step(layer, params.regularized)
    x_t = tf.constant(x)
    f_t = tf.constant(np.asarray(filters, dtype=np.int32))
    step = tf.constant(params.step_size, tf.float32)
    for _ in range(params.steps):
        if stop is not None:
            stop()
        if deadline is not None and deadline():
            raise TimeoutError("the deadline passed during gradient ascent")
        if params.regularized:
            transforms = np.stack([_transform(rng, size) for rng in streams])
        else:
            transforms = np.tile(identity, (len(filters), 1))
        x_t, _ = step_fn(x_t, f_t, tf.constant(transforms), step)
    activation = model.filter_activation(layer)(x_t, f_t)
    return x_t.numpy(), activation.numpy()


class PatternCache:
    """LRU cache of rendered patterns keyed by (model, version, layer, filter, params)."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple, Pattern] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> Pattern | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: tuple, pattern: Pattern) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = pattern
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def filter_patterns(
    model: ExplainableModel,
    model_key: tuple[str, str],
    layer: str,
    filters: list[int],
    params: PatternParams,
    cache: PatternCache,
    *,
    deadline_at: float | None = None,
    stop: Callable[[], None] | None = None,
) -> list[Pattern]:
    """Patterns for ``filters`` in request order; cached ones are reused, the rest run as one batch."""
    key = (*model_key, layer, params)
    found: dict[int, Pattern] = {}
    for f in dict.fromkeys(filters):
        hit = cache.get((*key, f))
        if hit is not None:
            found[f] = Pattern(f, hit.image, hit.activation, cached=True)
    missing = [f for f in dict.fromkeys(filters) if f not in found]
    if missing:
        expired = None if deadline_at is None else (lambda: time.monotonic() > deadline_at)
        x, activation = ascend(model, layer, missing, params, deadline=expired, stop=stop)
        for i, f in enumerate(missing):
            pattern = Pattern(f, pattern_to_uint8(x[i]), float(activation[i]))
            cache.put((*key, f), pattern)
            found[f] = pattern
    return [found[f] for f in filters]
