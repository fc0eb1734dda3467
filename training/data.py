"""Datasets and the deterministic held-out split.

Arrays are NHWC ``uint8`` (0-255, MNIST: 0 = background, 255 = ink) with integer labels, exactly what the
served model takes. The held-out split depends only on the labels and a fixed split seed, never on the
training seed, so training and export (parity) see the same held-out digits, and training never sees them.
This module imports NumPy only (and the repository contract's hash); TensorFlow is not needed to read data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnserve.repository import file_sha256

log = logging.getLogger(__name__)

DEFAULT_DATA = Path("data/mnist-8k.npz")
HELDOUT_COUNT = 1000
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """All samples of one data file, NHWC uint8, plus where they came from."""

    x: np.ndarray
    y: np.ndarray
    source: str
    sha256: str
    official_test: np.ndarray | None = None
    """Indices of an official test split, when the file has one (full MNIST)."""
    labels: tuple[str, ...] | None = None
    """Class names, when the data names its classes (folder trees); else the variant's labels apply."""
    validation: np.ndarray | None = None
    """Indices of a validation split (monitoring only), when the data has one."""


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    heldout: np.ndarray
    rule: str

    def describe(self) -> dict:
        return {
            "rule": self.rule,
            "train_count": int(self.train.size),
            "heldout_count": int(self.heldout.size),
            "heldout_indices_sha256": indices_sha256(self.heldout),
        }


def indices_sha256(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def _as_nhwc(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError(f"Expected uint8 pixels (0-255). Received: dtype={x.dtype}")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise ValueError(f"Expected images shaped [N, H, W] or [N, H, W, C]. Received: shape={x.shape}")
    return x


def load_mnist(path: str | Path = DEFAULT_DATA, allow_download: bool = False) -> Dataset:
    """Load MNIST-style digits from a local ``.npz``.

    Two layouts are accepted: the bundled ``x``/``y`` file (``data/mnist-8k.npz``) and Keras' full
    ``mnist.npz`` (``x_train``/``y_train``/``x_test``/``y_test``, 70,000 digits; its official test split
    becomes the held-out set). A missing file is an error unless ``allow_download`` is set, in which
    case ``keras.datasets.mnist`` fetches the full set into ``path``; tests never download.
    """
    path = Path(path)
    if not path.exists():
        if not allow_download:
            raise FileNotFoundError(
                f"MNIST data not found at {path}. Pass the bundled data/mnist-8k.npz, a local copy of "
                "Keras' mnist.npz, or allow_download=True to fetch full MNIST."
            )
        import keras  # only the download path needs Keras

        keras.datasets.mnist.load_data(path=str(path.resolve()))
        path = path.resolve()
    with np.load(path) as f:
        files = set(f.files)
        if {"x", "y"} <= files:
            x, y, test = f["x"], f["y"], None
        elif {"x_train", "y_train", "x_test", "y_test"} <= files:
            n_train = len(f["y_train"])
            x = np.concatenate([f["x_train"], f["x_test"]])
            y = np.concatenate([f["y_train"], f["y_test"]])
            test = np.arange(n_train, len(y))
        else:
            raise ValueError(
                f"Unrecognised MNIST file {path}: expected arrays x/y or x_train/y_train/x_test/y_test. "
                f"Received: {sorted(files)}"
            )
    x = _as_nhwc(x)
    y = np.asarray(y).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} images but {len(y)} labels")
    log.info("Loaded %d digits %s from %s", len(y), x.shape[1:], path)
    return Dataset(x=x, y=y, source=str(path), sha256=file_sha256(path), official_test=test)


SMOKE_DATA = "smoke"
"""``--data smoke``: generated data (see :func:`synthetic_dataset`), for CI-sized runs."""


def _loaders() -> dict:
    from cnnserve.training import datasets

    return {
        "mnist": lambda path, **_: load_mnist(path),
        "digits": datasets.load_digits,
        "faces": datasets.load_faces,
        "split_folders": datasets.load_split_folders,
        "image_folders": datasets.load_image_folders,
        "cifar10": datasets.load_cifar10,
        "cifar100": datasets.load_cifar100,
    }


def load_dataset(
    key: str,
    path: str | Path,
    input_shape: tuple[int, int, int] | None = None,
    labels: tuple[str, ...] | None = None,
) -> Dataset:
    """Load dataset ``key`` from ``path``; ``path == "smoke"`` generates a small learnable data set of
    ``input_shape`` and ``len(labels)`` classes instead. Folder loaders resize images to ``input_shape``."""
    if str(path) == SMOKE_DATA:
        if input_shape is None or labels is None:
            raise ValueError("Smoke data needs the input shape and the labels")
        return synthetic_dataset(tuple(input_shape), tuple(labels))
    loaders = _loaders()
    try:
        loader = loaders[key]
    except KeyError:
        raise KeyError(f"No loader for dataset {key!r}. Known: {', '.join(sorted(loaders))}") from None
    return loader(path, input_shape=input_shape, labels=labels)


SMOKE_TRAIN_PER_CLASS = 4
SMOKE_HELDOUT = 256


def synthetic_dataset(input_shape: tuple[int, int, int], labels: tuple[str, ...], seed: int = 0) -> Dataset:
    """Generated images a CNN can learn in a few steps: noise plus a bright square whose position and
    colour depend on the class. ``SMOKE_HELDOUT`` held-out images (enough for the parity check) and
    ``SMOKE_TRAIN_PER_CLASS`` (at least 32) training images; deterministic for a shape and label count."""
    h, w, c = input_shape
    k = len(labels)
    n_train = max(32, SMOKE_TRAIN_PER_CLASS * min(k, 16))
    n = n_train + SMOKE_HELDOUT
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.integers(0, 64, (n, h, w, c), dtype=np.uint8)
    side_h, side_w = max(1, h // 4), max(1, w // 4)
    for i, cls in enumerate(y):
        cell = int(cls) % 9
        top, left = (cell // 3) * (h - side_h) // 2, (cell % 3) * (w - side_w) // 2
        colour = 255 - 64 * ((int(cls) // 9) % 3 * (np.arange(c) % 2))
        x[i, top : top + side_h, left : left + side_w, :] = colour
    digest = hashlib.sha256(x.tobytes() + y.astype("<i8").tobytes()).hexdigest()
    return Dataset(
        x=x,
        y=y.astype(np.int64),
        source=f"{SMOKE_DATA}:{h}x{w}x{c}:{k}",
        sha256=digest,
        official_test=np.arange(n_train, n),
        labels=tuple(labels),
    )


def stratified_heldout(
    y: np.ndarray, count: int = HELDOUT_COUNT, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: ``count`` held-out indices with the class mix of ``y``.

    Per class, indices are shuffled with ``seed`` and the first ``n_c`` are held out, with
    ``n_c`` proportional to the class frequency (largest remainder, so the total is exactly ``count``).
    Returns ``(train, heldout)``, both sorted.
    """
    y = np.asarray(y)
    if not 0 < count < len(y):
        raise ValueError(f"Held-out count must be in (0, {len(y)}). Received: count={count}")
    rng = np.random.default_rng(seed)
    classes, freq = np.unique(y, return_counts=True)
    exact = freq * count / len(y)
    take = np.floor(exact).astype(int)
    short = count - take.sum()
    take[np.argsort(-(exact - take), kind="stable")[:short]] += 1
    heldout = []
    for cls, n in zip(classes, take, strict=True):
        idx = np.flatnonzero(y == cls)
        heldout.append(rng.permutation(idx)[:n])
    heldout = np.sort(np.concatenate(heldout))
    train = np.setdiff1d(np.arange(len(y)), heldout, assume_unique=True)
    return train, heldout


def heldout_count(n: int) -> int:
    """``HELDOUT_COUNT`` for data of at least 5x that size (the bundled MNIST: 1000 of 8000), else 20 %."""
    return HELDOUT_COUNT if n >= 5 * HELDOUT_COUNT else max(1, round(0.2 * n))


def split_dataset(data: Dataset, count: int | None = None, seed: int = SPLIT_SEED) -> Split:
    """The held-out split of ``data``: the official test set when there is one, else stratified
    (``count`` samples, default :func:`heldout_count`)."""
    count = heldout_count(len(data.y)) if count is None else count
    if data.official_test is not None:
        heldout = np.sort(data.official_test)
        train = np.setdiff1d(np.arange(len(data.y)), heldout, assume_unique=True)
        if data.validation is not None:
            train = np.setdiff1d(train, data.validation, assume_unique=True)
        return Split(train=train, heldout=heldout, rule="official test split of the file")
    train, heldout = stratified_heldout(data.y, count=count, seed=seed)
    rule = f"stratified random {count} held out per class frequency, numpy default_rng(seed={seed})"
    return Split(train=train, heldout=heldout, rule=rule)
