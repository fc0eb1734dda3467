"""Real data loaders beyond the bundled MNIST: each returns a :class:`~cnnserve.training.data.Dataset`
(NHWC uint8, 0-255, integer labels), what the served model takes.

Where the data comes from the internet, the real loader stays (``--data keras``: ``keras.datasets``, which
downloads once into ``~/.keras/datasets``) and a local path works offline: the CIFAR python-pickle batch
folders (what Keras unpacks, and what 003_*.txt reads), folder trees of images (faces, cats vs dogs,
ImageNet-style class folders). Only NumPy and Pillow are needed, except scikit-learn for its bundled digits.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np

from cnnserve.repository import file_sha256
from cnnserve.training.data import Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
KERAS_DOWNLOAD = "keras"
"""``--data keras``: fetch through ``keras.datasets`` (internet on first use, then Keras' cache)."""


def _array_sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _require(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path}")


# ------------------------------------------------------------------ sklearn digits


def load_digits(path: str | Path = "sklearn", **_) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797, no download), or a local ``.npz`` with ``x`` [N, 8, 8]
    (0-16) and ``y``. Pixels 0-16 become uint8 0-255 (``round(v * 255 / 16)``): the served contract."""
    if str(path) == "sklearn":
        try:
            from sklearn.datasets import load_digits as sk_digits
        except ImportError as exc:
            raise ImportError("digits_bn's data needs scikit-learn: pip install 'cnnserve[train]'") from exc
        bunch = sk_digits()
        x16, y, source = bunch.images, bunch.target, "sklearn.datasets.load_digits"
    else:
        path = Path(path)
        _require(path, "8x8 digits file")
        with np.load(path) as f:
            x16, y = f["x"], f["y"]
        source = str(path)
    x16 = np.asarray(x16, dtype=np.float64).reshape(-1, 8, 8)
    if x16.min() < 0 or x16.max() > 16:
        raise ValueError(f"8x8 digits have pixels 0-16. Received: range {x16.min()}..{x16.max()}")
    x = np.round(x16 * 255.0 / 16.0).astype(np.uint8)[..., np.newaxis]
    y = np.asarray(y).astype(np.int64)
    return Dataset(x=x, y=y, source=source, sha256=_array_sha256(x, y))


# ------------------------------------------------------------------ folder trees of images


def read_image(path: Path, input_shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as uint8 [H, W, C], bilinear-resized like the server resizes."""
    from PIL import Image

    h, w, c = input_shape
    with Image.open(path) as img:
        img = img.convert("L" if c == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[..., np.newaxis] if c == 1 else arr


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_tree(root: Path, classes: list[str], input_shape) -> tuple[list[np.ndarray], list[int], list[Path]]:
    xs, ys, files = [], [], []
    for idx, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            continue
        for f in _image_files(folder):
            xs.append(read_image(f, input_shape))
            ys.append(idx)
            files.append(f)
    return xs, ys, files


def _tree_dataset(parts: dict[str, Path], classes: list[str], input_shape, source: Path, labels) -> Dataset:
    """Images of ``parts`` (split name -> folder of class folders), the test/validation parts recorded."""
    xs, ys, index, digest = [], [], {}, hashlib.sha256()
    for part, folder in parts.items():
        px, py, files = _read_tree(folder, classes, input_shape)
        index[part] = np.arange(len(ys), len(ys) + len(py))
        xs += px
        ys += py
        for f in files:
            digest.update(f"{part}/{f.relative_to(folder).as_posix()}\0{file_sha256(f)}\n".encode())
    if not ys:
        raise ValueError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {source}")
    h, w, c = input_shape
    x = np.stack(xs).reshape(-1, h, w, c)
    y = np.asarray(ys, dtype=np.int64)
    log.info("Loaded %d images of %d classes from %s", len(y), len(classes), source)
    return Dataset(
        x=x,
        y=y,
        source=str(source),
        sha256=digest.hexdigest(),
        official_test=index.get("test"),
        validation=index.get("validation"),
        labels=labels,
    )


def load_faces(root: str | Path, input_shape=(70, 50, 3), **_) -> Dataset:
    """Face crops, one folder per person: ``root/PERSON/*.png`` (what ``cnnserve faces extract`` writes;
    a stratified held-out split is taken), or the reference's ``root/train/PERSON`` + ``root/test/PERSON``."""
    root = Path(root)
    _require(root, "Face folder tree")
    if (root / "train").is_dir() and (root / "test").is_dir():
        persons = [d.name for d in _class_dirs(root / "train")]
        parts = {"train": root / "train", "test": root / "test"}
    else:
        persons = [d.name for d in _class_dirs(root)]
        parts = {"all": root}
    if len(persons) < 2:
        raise ValueError(f"face_cnn needs at least two persons (folders) under {root}. Received: {persons}")
    return _tree_dataset(parts, persons, input_shape, root, labels=tuple(persons))


def load_split_folders(root: str | Path, input_shape=(256, 256, 3), **_) -> Dataset:
    """``root/{train,validation,test}/CLASS/*`` (cats vs dogs in the reference): two or more classes, the
    names of ``train``'s folders (sorted). ``test`` is the held-out split; ``validation`` is monitored."""
    root = Path(root)
    _require(root / "train", "train folder")
    classes = [d.name for d in _class_dirs(root / "train")]
    parts = {name: root / name for name in ("train", "validation", "test") if (root / name).is_dir()}
    if "test" not in parts:
        raise FileNotFoundError(f"{root} has no test folder (expected train/, validation/, test/)")
    return _tree_dataset(parts, classes, input_shape, root, labels=tuple(classes))


def load_image_folders(root: str | Path, input_shape=(224, 224, 3), labels=None, **_) -> Dataset:
    """ImageNet-style ``root/CLASS/*`` where CLASS is one of the variant's labels (e.g. ``zebra``) or its
    index (``340``). Labels stay the variant's (all 1000); a stratified held-out split is taken."""
    root = Path(root)
    _require(root, "Image class folders")
    if labels is None:
        raise ValueError("Image class folders need the variant's labels")
    by_name = {name: i for i, name in enumerate(labels)}
    dirs = _class_dirs(root)
    unknown = [d.name for d in dirs if d.name not in by_name and not d.name.isdigit()]
    if unknown:
        raise ValueError(f"Folders under {root} must be class names or indices. Unknown: {unknown[:5]}")
    xs, ys, digest = [], [], hashlib.sha256()
    for d in dirs:
        idx = int(d.name) if d.name.isdigit() else by_name[d.name]
        for f in _image_files(d):
            xs.append(read_image(f, input_shape))
            ys.append(idx)
            digest.update(f"{d.name}/{f.name}\0{file_sha256(f)}\n".encode())
    if not ys:
        raise ValueError(f"No images under {root}")
    x = np.stack(xs)
    return Dataset(x=x, y=np.asarray(ys, dtype=np.int64), source=str(root), sha256=digest.hexdigest())


# ------------------------------------------------------------------ CIFAR


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # noqa: S301 (the dataset's own format, local files)
    return batch


def _cifar_images(flat: np.ndarray) -> np.ndarray:
    """Rows of 3072 bytes (1024 R, 1024 G, 1024 B) -> [N, 32, 32, 3], as 003_*.txt reshapes them."""
    return np.asarray(flat, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_dataset(x_train, y_train, x_test, y_test, source: str, sha256: str) -> Dataset:
    x = np.concatenate([x_train, x_test]).astype(np.uint8)
    y = np.concatenate([np.ravel(y_train), np.ravel(y_test)]).astype(np.int64)
    test = np.arange(len(np.ravel(y_train)), len(y))
    return Dataset(x=x, y=y, source=source, sha256=sha256, official_test=test)


def load_cifar10(path: str | Path = KERAS_DOWNLOAD, **_) -> Dataset:
    """CIFAR-10: ``keras`` (``keras.datasets.cifar10``) or the python-pickle folder ``cifar-10-batches-py``
    (``data_batch_1..5``, ``test_batch``); the official 10,000 test images are held out."""
    if str(path) == KERAS_DOWNLOAD:
        import keras

        (xt, yt), (xs, ys) = keras.datasets.cifar10.load_data()
        return _cifar_dataset(xt, yt, xs, ys, "keras.datasets.cifar10", _array_sha256(xt, yt, xs, ys))
    root = Path(path)
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files or not (root / "test_batch").exists():
        raise FileNotFoundError(f"{root}: expected CIFAR-10 python batches data_batch_1..5 and test_batch")
    batches = [_unpickle(f) for f in train_files]
    test = _unpickle(root / "test_batch")
    xt = np.concatenate([_cifar_images(b["data"]) for b in batches])
    yt = np.concatenate([np.asarray(b["labels"]) for b in batches])
    xs, ys = _cifar_images(test["data"]), np.asarray(test["labels"])
    sha = hashlib.sha256("".join(file_sha256(f) for f in [*train_files, root / "test_batch"]).encode()).hexdigest()
    return _cifar_dataset(xt, yt, xs, ys, str(root), sha)


def load_cifar100(path: str | Path = KERAS_DOWNLOAD, **_) -> Dataset:
    """CIFAR-100 (fine labels): ``keras`` or the python-pickle folder ``cifar-100-python`` (``train``, ``test``)."""
    if str(path) == KERAS_DOWNLOAD:
        import keras

        (xt, yt), (xs, ys) = keras.datasets.cifar100.load_data(label_mode="fine")
        return _cifar_dataset(xt, yt, xs, ys, "keras.datasets.cifar100", _array_sha256(xt, yt, xs, ys))
    root = Path(path)
    if not (root / "train").exists() or not (root / "test").exists():
        raise FileNotFoundError(f"{root}: expected CIFAR-100 python files train and test")
    train, test = _unpickle(root / "train"), _unpickle(root / "test")
    sha = hashlib.sha256((file_sha256(root / "train") + file_sha256(root / "test")).encode()).hexdigest()
    return _cifar_dataset(
        _cifar_images(train["data"]),
        np.asarray(train["fine_labels"]),
        _cifar_images(test["data"]),
        np.asarray(test["fine_labels"]),
        str(root),
        sha,
    )
