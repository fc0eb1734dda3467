"""Training-only data pipeline: shuffling, batching and random geometric augmentation.

The augmentation runs in the tf.data pipeline, never in the served graph. Augmented images are rounded
back to uint8 so training sees exactly the input type and value grid that serving sends.
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


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, aug: Augmentation, seed: int):
    """Shuffled (reshuffled each epoch), batched, augmented uint8 NHWC batches with the given labels
    (class indices, or one-hot rows for a label-smoothed loss)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    layers = augmentation_layers(aug, seed)
    if layers is not None:

        def _augment(images, labels):
            out = layers(tf.cast(images, tf.float32), training=True)
            out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
            return out, labels

        ds = ds.map(_augment, num_parallel_calls=1, deterministic=True)
    return ds.prefetch(2)
