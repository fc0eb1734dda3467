"""What ``cnnserve export --keras`` and ``--onnx`` share: the preprocessing the served graph records, the labels,
the checks on the command's input, and the staged install.

The served graph keeps the project's contract: UINT8 NHWC raw pixels in, the preprocessing inside the graph,
per channel ``(x * scale - mean) / std`` after an optional RGB -> BGR swap (``--bgr``, for caffe-style
models); ``mean`` and ``std`` are in the channel order the model sees. The defaults (``scale`` 1/255,
``mean`` 0, ``std`` 1, RGB) assume a model trained on float pixels in [0, 1].
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cnnserve.repository import validate_model_name
from cnnserve.service.errors import InvalidArgument

DEFAULT_SCALE = 1 / 255
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_QUEUE_DELAY_US = 2000
FORMULA = "(x * scale - mean) / std per channel, x the uint8 pixel (after the RGB -> BGR swap when bgr)"


class ExportInputError(ValueError):
    """The command's input cannot be exported (not a model, not an image classifier, bad options)."""


@dataclass(frozen=True)
class Preprocessing:
    """The normalisation the served graph applies to uint8 pixels before the user's model."""

    scale: float = DEFAULT_SCALE
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    bgr: bool = False
    defaults: tuple[str, ...] = ()  # which of scale/mean/std were not given

    @classmethod
    def from_options(
        cls, scale: float | None, mean: str | Sequence[float] | None, std: str | Sequence[float] | None, bgr: bool
    ) -> Preprocessing:
        defaults = tuple(k for k, v in (("scale", scale), ("mean", mean), ("std", std)) if v is None)
        return cls(
            scale=DEFAULT_SCALE if scale is None else float(scale),
            mean=(0.0,) if mean is None else _floats(mean, "--mean"),
            std=(1.0,) if std is None else _floats(std, "--std"),
            bgr=bool(bgr),
            defaults=defaults,
        )

    def per_channel(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``mean`` and ``std`` as float32 [C]; ExportInputError when their length fits neither 1 nor C."""
        out = []
        for flag, values in (("--mean", self.mean), ("--std", self.std)):
            if len(values) not in (1, channels):
                raise ExportInputError(
                    f"{flag} has {len(values)} values; the model's input has {channels} channel(s): give "
                    + ("1 value" if channels == 1 else f"1 or {channels} values")
                )
            out.append(np.broadcast_to(np.asarray(values, np.float32), (channels,)).copy())
        mean, std = out
        if not np.all(std != 0):
            raise ExportInputError(f"--std must not contain 0. Received: {list(self.std)}")
        if self.bgr and channels != 3:
            raise ExportInputError(f"--bgr swaps 3 colour channels; the model's input has {channels}")
        return mean, std

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The same preprocessing in NumPy (float32), on uint8 NHWC ``x``: what the graph does."""
        mean, std = self.per_channel(x.shape[-1])
        x = x[..., ::-1] if self.bgr else x
        return ((x.astype(np.float32) * np.float32(self.scale)) - mean) / std

    def as_metadata(self, channels: int) -> dict:
        mean, std = self.per_channel(channels)
        return {
            "formula": FORMULA,
            "scale": self.scale,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "bgr": self.bgr,
            "defaults": list(self.defaults),
        }


def _floats(values: str | Sequence[float], flag: str) -> tuple[float, ...]:
    items = values.split(",") if isinstance(values, str) else list(values)
    try:
        parsed = tuple(float(v) for v in items)
    except ValueError:
        raise ExportInputError(
            f"{flag} takes comma-separated numbers, e.g. 0.485,0.456,0.406. Received: {values!r}"
        ) from None
    if not parsed or not all(np.isfinite(parsed)):
        raise ExportInputError(f"{flag} takes finite numbers. Received: {values!r}")
    return parsed


def checked_name(name: str) -> str:
    try:
        return validate_model_name(name)
    except InvalidArgument as exc:
        raise ExportInputError(f"--name: {exc.message}") from None


def read_labels(path: str | Path | None, classes: int) -> list[str]:
    """One label per non-empty line of ``path``, exactly ``classes`` of them; ``class_0..`` without a file."""
    if path is None:
        return [f"class_{i}" for i in range(classes)]
    path = Path(path)
    if not path.is_file():
        raise ExportInputError(f"--labels {path}: no such file")
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != classes:
        raise ExportInputError(f"--labels {path} holds {len(labels)} labels; the model has {classes} classes")
    return labels


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def staged_model(repository: str | Path, name: str, version: int) -> Iterator[tuple[Path, Path]]:
    """A staging ``NAME/`` folder and its version folder beside the repository; installed into the repository
    when the block ends without an exception, removed either way (nothing is installed on failure)."""
    from cnnserve.export.exporter import _install

    if version < 1:
        raise ExportInputError(f"--version must be >= 1. Received: {version}")
    repository = Path(repository)
    repository.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".cnnserve-export-{name}-", dir=repository.resolve().parent))
    try:
        staged = staging / name
        vdir = staged / str(version)
        vdir.mkdir(parents=True)
        yield staged, vdir
        repository.mkdir(parents=True, exist_ok=True)
        _install(staged, repository / name, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
