"""Top-k with labels: the best classes of each row of class probabilities, for ModelInfer and Classify alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnserve.service.errors import InvalidArgument


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str  # "" when the model has no label for this class
    score: float


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> list[list[Prediction]]:
    """The ``k`` best classes of each row (the last axis holds the classes), best first; ties keep class order."""
    classes = probabilities.shape[-1]
    if k > classes:  # k >= 1 is the request's rule, checked before queueing
        raise InvalidArgument(f"classification k={k} is larger than the model's {classes} classes")
    flat = probabilities.reshape(-1, classes)
    best = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return [
        [Prediction(int(i), labels[i] if i < len(labels) else "", float(row[i])) for i in indices]
        for row, indices in zip(flat, best, strict=True)
    ]


def classification_tensor(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> np.ndarray:
    """Triton's classification extension: BYTES b"score:index:label" (b"score:index" without a label)."""
    rows = top_k(probabilities, k, labels)
    values = [
        (f"{p.score:f}:{p.index}:{p.label}" if p.label else f"{p.score:f}:{p.index}").encode()
        for row in rows
        for p in row
    ]
    return np.array(values, dtype=object).reshape(*probabilities.shape[:-1], k)
