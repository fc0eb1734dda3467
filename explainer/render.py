"""Maps to pictures: normalisation, the JET colormap, overlays, activation grids, filter-pattern display.

numpy and Pillow only (no TensorFlow), so clients and tests can use it too.
"""

from __future__ import annotations

import math

import numpy as np

from cnnserve.service.imaging import encode_png

EPSILON = 1e-7
DEFAULT_ALPHA = 0.4


def relu_normalise(cam: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """ReLU, then divide each map by its max + epsilon: values in [0, 1); a flat or negative map gives zeros.

    ``cam`` is [..., H, W]; every leading index is normalised on its own.
    """
    cam = np.maximum(np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = cam.max(axis=(-2, -1), keepdims=True)
    return (cam / (peak + epsilon)).astype(np.float32)


def jet(values: np.ndarray) -> np.ndarray:
    """The JET colormap (as OpenCV's COLORMAP_JET, in RGB order): [..] floats in [0, 1] -> [.., 3] uint8."""
    v = np.clip(values.astype(np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Blend the JET-coloured ``heatmap`` [H, W] in [0, 1] over ``image`` uint8 [H, W, 1|3]: RGB uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * jet(heatmap).astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA) -> bytes:
    return encode_png(overlay(image, heatmap, alpha))


def channel_tiles(maps: np.ndarray, epsilon: float = EPSILON) -> tuple[np.ndarray, list[int]]:
    """[h, w, K] activations -> ([K, h, w] uint8 tiles, positions of constant ("dead") channels).

    Each channel is scaled to its own min..max; a constant channel renders black, never NaN.
    """
    maps = np.nan_to_num(np.moveaxis(maps.astype(np.float32), -1, 0))
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    dead = span[:, 0, 0] <= epsilon
    scaled = np.where(span > epsilon, (maps - low) / np.maximum(span, epsilon), 0.0)
    return np.round(scaled * 255.0).astype(np.uint8), [int(i) for i in np.flatnonzero(dead)]


def grid(tiles: np.ndarray, columns: int, border: int = 1) -> np.ndarray:
    """[K, h, w] uint8 tiles -> one uint8 image with ``columns`` tiles per row and a white border between."""
    k, h, w = tiles.shape
    rows = max(1, math.ceil(k / columns))
    out = np.full((rows * (h + border) + border, columns * (w + border) + border), 255, dtype=np.uint8)
    for i in range(k):
        r, c = divmod(i, columns)
        top, left = border + r * (h + border), border + c * (w + border)
        out[top : top + h, left : left + w] = tiles[i]
    return out


def grid_columns(count: int) -> int:
    """Tiles per row: a near-square grid (the reference shows 25 channels as 5 x 5)."""
    return max(1, math.ceil(math.sqrt(count)))


def pattern_to_uint8(x: np.ndarray) -> np.ndarray:
    """The reference's display of a gradient-ascent result: centre, std to 0.1, +0.5, clip to [0, 1], x255."""
    x = x.astype(np.float64)
    x = x - x.mean()
    x = x / (x.std() + 1e-5)
    x = np.clip(x * 0.1 + 0.5, 0.0, 1.0)
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)
