"""Training-only data pipeline: shuffling, batching and random geometric augmentation.

The augmentation runs in the tf.data pipeline, never in the served graph. Augmented images are rounded
back to uint8 so training sees exactly the input type and value grid that serving sends.

Two implementations: Keras' random-transform layers (one resampling per transform), and, where the
variant asks for elastic distortion (``Augmentation.elastic_alpha``), :func:`distort` in NumPy, which
draws an affine jitter and a smooth elastic displacement field per image and resamples each image once.
"""

from __future__ import annotations

import numpy as np

from cnnserve.training.registry import Augmentation


def augmentation_layers(aug: Augmentation, seed: int):
    """A Keras Sequential of random transforms, or None when all are disabled."""
    import keras

    fill = aug.fill_mode
    layers = []
    if aug.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 3, name="aug_flip"))
    if aug.max_rotation:
        layers.append(keras.layers.RandomRotation(aug.max_rotation, fill_mode=fill, seed=seed, name="aug_rotate"))
    if aug.max_shear:
        layers.append(
            keras.layers.RandomShear(aug.max_shear, aug.max_shear, fill_mode=fill, seed=seed + 4, name="aug_shear")
        )
    if aug.max_zoom:
        layers.append(keras.layers.RandomZoom(aug.max_zoom, fill_mode=fill, seed=seed + 1, name="aug_zoom"))
    if aug.max_shift:
        layers.append(
            keras.layers.RandomTranslation(
                aug.max_shift, aug.max_shift, fill_mode=fill, seed=seed + 2, name="aug_shift"
            )
        )
    return keras.Sequential(layers, name="augmentation") if layers else None


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """``G`` with ``G @ v`` the Gaussian smoothing (standard deviation ``sigma`` pixels, zero outside) of a
    length-``n`` vector: rows are the unit-sum kernel, cut at the borders (scipy's ``mode="constant"``)."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    radius = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    norm = np.exp(-(radius**2) / (2 * sigma**2)).sum()
    return (np.exp(-(offsets**2) / (2 * sigma**2)) / norm).astype(np.float32)


def distort(images: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Random affine jitter plus elastic distortion of a uint8 NHWC batch, one bilinear resampling each.

    Per image: rotation up to ``max_rotation`` of a full turn, isotropic zoom up to ``max_zoom``, shear up
    to ``max_shear`` (x moves by shear * y), translation up to ``max_shift`` of the height and width, all
    uniform and about the image centre; then an elastic displacement field (Simard et al. 2003: uniform
    noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of ``elastic_sigma`` pixels, times
    ``elastic_alpha``). Pixels sampled from outside are 0 (``fill_mode="constant"``) or the nearest edge.
    """
    b, h, w, c = images.shape
    u = rng.uniform(-1.0, 1.0, size=(5, b, 1, 1)).astype(np.float32)
    angle = u[0] * (aug.max_rotation * 2 * np.pi)
    scale = 1.0 / (1.0 + u[1] * aug.max_zoom)
    shear = u[2] * aug.max_shear
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32) - (h - 1) / 2, np.arange(w, dtype=np.float32) - (w - 1) / 2,
                         indexing="ij")  # fmt: skip
    gx = gx + shear * gy
    cos, sin = np.cos(angle), np.sin(angle)
    sy = scale * (cos * gy - sin * gx) + (h - 1) / 2 - u[3] * aug.max_shift * h
    sx = scale * (sin * gy + cos * gx) + (w - 1) / 2 - u[4] * aug.max_shift * w
    if aug.elastic_alpha:
        noise = rng.uniform(-1.0, 1.0, size=(2, b, h, w)).astype(np.float32)
        gh, gw = gaussian_matrix(h, aug.elastic_sigma), gaussian_matrix(w, aug.elastic_sigma)
        field = aug.elastic_alpha * (gh @ noise @ gw.T)
        sy, sx = sy + field[0], sx + field[1]
    return _bilinear(images, sy, sx, nearest=aug.fill_mode == "nearest")


def _bilinear(images: np.ndarray, sy: np.ndarray, sx: np.ndarray, nearest: bool) -> np.ndarray:
    """``images`` sampled at float coordinates ``(sy, sx)`` (each [B, H, W]), rounded back to uint8."""
    b, h, w, c = images.shape
    if nearest:
        sy, sx = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    y0, x0 = np.floor(sy), np.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    flat = images.reshape(b, h * w, c).astype(np.float32)
    out = np.zeros((b, h, w, c), np.float32)
    for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yi, xi = (y0 + dy).astype(np.int64), (x0 + dx).astype(np.int64)
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        index = (np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)).reshape(b, h * w, 1)
        out += np.where(inside, np.take_along_axis(flat, index, axis=1).reshape(b, h, w, c), 0.0) * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, aug: Augmentation, seed: int):
    """Shuffled (reshuffled each epoch), batched, augmented uint8 NHWC batches with the given labels
    (class indices, or one-hot rows for a label-smoothed loss)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if aug.elastic_alpha or aug.numpy_sampler:
        rng = np.random.default_rng(seed)  # advanced batch by batch, in order: a seed gives one sequence

        def _distort(images, labels):
            out = tf.numpy_function(lambda batch: distort(batch, rng, aug), [images], tf.uint8, stateful=True)
            out.set_shape(images.shape)
            return out, labels

        return ds.map(_distort, num_parallel_calls=1, deterministic=True).prefetch(2)
    layers = augmentation_layers(aug, seed)
    if layers is not None:

        def _augment(images, labels):
            out = layers(tf.cast(images, tf.float32), training=True)
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
            return out, labels

        ds = ds.map(_augment, num_parallel_calls=1, deterministic=True)
    return ds.prefetch(2)
