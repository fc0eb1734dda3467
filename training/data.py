"""Datasets and the deterministic held-out split.

Arrays are NHWC ``uint8`` (0-255, MNIST: 0 = background, 255 = ink) with integer labels, exactly what the
served model takes. The held-out split depends only on the labels and a fixed split seed, never on the
training seed, so training and export (parity) see the same held-out digits, and training never sees them.
This module imports NumPy only; TensorFlow is not needed to read data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

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


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    logger.info("Loaded %d digits %s from %s", len(y), x.shape[1:], path)
    return Dataset(x=x, y=y, source=str(path), sha256=file_sha256(path), official_test=test)


LOADERS = {"mnist": load_mnist}


def load_dataset(key: str, path: str | Path) -> Dataset:
    try:
        loader = LOADERS[key]
    except KeyError:
        raise KeyError(f"No loader for dataset {key!r}. Known: {', '.join(sorted(LOADERS))}") from None
    return loader(path)


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


def split_dataset(data: Dataset, count: int = HELDOUT_COUNT, seed: int = SPLIT_SEED) -> Split:
    """The held-out split of ``data``: the official test set when there is one, else stratified."""
    if data.official_test is not None:
        heldout = np.sort(data.official_test)
        train = np.setdiff1d(np.arange(len(data.y)), heldout, assume_unique=True)
        return Split(train=train, heldout=heldout, rule="official test split of the file")
    train, heldout = stratified_heldout(data.y, count=count, seed=seed)
    rule = f"stratified random {count} held out per class frequency, numpy default_rng(seed={seed})"
    return Split(train=train, heldout=heldout, rule=rule)
