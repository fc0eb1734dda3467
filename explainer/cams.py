"""Heatmap methods on an ExplainableModel: Grad-CAM, the reference's gradient x activation, Grad-CAM++,
Score-CAM. Every method handles a whole batch in one call of a compiled function.

Each method returns the class-activation map at the layer's resolution, before ReLU and normalisation;
``heatmaps()`` applies ReLU, resizes it to the input (bilinear) and divides by max + epsilon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from cnnserve.explainer.graph import ExplainableModel
from cnnserve.explainer.render import relu_normalise

METHODS = ("gradcam", "grad_x_activation", "gradcam_plus_plus", "score_cam")
DEFAULT_SCORE_CAM_CHANNELS = 64
SCORE_CAM_CHUNK = 64  # masked images per forward pass


@dataclass
class CamResult:
    low_res: np.ndarray  # [B, h, w] raw map (no ReLU, no normalisation)
    heatmaps: np.ndarray  # [B, H, W] float32 in [0, 1]
    probabilities: np.ndarray  # [B, classes]
    target: np.ndarray  # [B] the explained class


def gradcam(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Selvaraju et al. 2017: weights = spatial mean of the gradient; map = sum_k w_k A_k."""
    weights = g.mean(axis=(1, 2), keepdims=True)
    return (weights * a).sum(axis=-1)


def grad_x_activation(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The reference (section 7): A_k * dS/dA_k elementwise, averaged over channels."""
    return (a * g).mean(axis=-1)


def gradcam_plus_plus(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Chattopadhay et al. 2018 with the exponential-score closed form (exp(S) cancels after normalising):
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), w_k = sum_ij alpha * relu(g)."""
    g = g.astype(np.float64)
    g2, g3 = g**2, g**3
    total = a.sum(axis=(1, 2), keepdims=True)
    denom = 2.0 * g2 + total * g3
    alpha = np.where(g != 0.0, g2 / np.where(denom != 0.0, denom, 1.0), 0.0)
    weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2), keepdims=True)
    return (weights * a).sum(axis=-1).astype(np.float32)


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """[B, h, w] -> [B, H, W], bilinear."""
    if maps.shape[1:] == (height, width):
        return maps.astype(np.float32)
    return tf.image.resize(maps[..., None], (height, width), method="bilinear").numpy()[..., 0]


def score_cam(
    model: ExplainableModel,
    x: np.ndarray,
    a: np.ndarray,
    target: np.ndarray,
    max_channels: int,
    stop: Callable[[], None] | None = None,
) -> np.ndarray:
    """Wang et al. 2020: mask the input with each channel's upsampled, min-max-scaled map; the channel's
    weight is the target probability of the masked input. Only the ``max_channels`` channels with the
    largest mean activation per image are used (the "Faster Score-CAM" shortcut); the rest weigh 0."""
    batch, _, _, channels = a.shape
    height, width, _ = model.input_shape
    k = min(max_channels, channels)
    chosen = np.argsort(-a.mean(axis=(1, 2)), axis=1, kind="stable")[:, :k]  # [B, k]
    probabilities = model.probabilities()
    cams = np.zeros(a.shape[:3], dtype=np.float32)
    for b in range(batch):
        maps = np.moveaxis(a[b][..., chosen[b]], -1, 0)  # [k, h, w]
        masks = upsample(maps, height, width)
        low = masks.min(axis=(1, 2), keepdims=True)
        span = masks.max(axis=(1, 2), keepdims=True) - low
        masks = np.where(span > 0, (masks - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
        masked = x[b][None] * masks[..., None]  # [k, H, W, C]
        chunks = []
        for i in range(0, k, SCORE_CAM_CHUNK):
            if stop is not None:
                stop()  # raises when the caller left or the deadline passed: stop between chunks
            chunks.append(probabilities(tf.constant(masked[i : i + SCORE_CAM_CHUNK])).numpy()[:, target[b]])
        scores = np.concatenate(chunks)
        cams[b] = (a[b][..., chosen[b]] * scores).sum(axis=-1)
    return cams


def heatmaps(
    model: ExplainableModel,
    pixels: np.ndarray,
    layer: str,
    method: str = "gradcam",
    target: int | None = None,
    max_channels: int = DEFAULT_SCORE_CAM_CHANNELS,
    stop: Callable[[], None] | None = None,
) -> CamResult:
    """Maps for a batch of uint8 (or float) pixels [B, H, W, C]; ``target`` None means each image's top-1.

    ``stop()``, when given, is called at Score-CAM's batch boundaries and raises to end the work there."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    x = pixels.astype(np.float32)
    targets = np.full((len(x),), -1 if target is None else int(target), dtype=np.int32)
    a, g, probabilities, chosen = model.gradients(layer)(tf.constant(x), tf.constant(targets))
    a, g, chosen = a.numpy(), g.numpy(), chosen.numpy()
    if method == "gradcam":
        low = gradcam(a, g)
    elif method == "grad_x_activation":
        low = grad_x_activation(a, g)
    elif method == "gradcam_plus_plus":
        low = gradcam_plus_plus(a, g)
    else:
        low = score_cam(model, x, a, chosen, max_channels, stop)
    height, width, _ = model.input_shape
    maps = relu_normalise(upsample(np.maximum(low, 0.0), height, width))
    return CamResult(low.astype(np.float32), maps, probabilities.numpy(), chosen)
