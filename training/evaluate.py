"""Accuracy of an exported model through the served ONNX path and through TensorFlow, side by side.

The ONNX side is what clients get: onnxruntime on the repository's ``model.onnx`` (CPU), or a running
cnnserve server over gRPC (``server="HOST:PORT"``, KServe v2 ModelInfer). The TensorFlow side is the
SavedModel of the same repository version.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cnnserve.training.architectures import INPUT_NAME, OUTPUT_NAME
from cnnserve.training.data import load_dataset, split_dataset
from cnnserve.training.registry import get_variant


def _onnx_local(path: Path, x: np.ndarray, batch: int) -> np.ndarray:
    from cnnserve.export.parity import onnx_session, predict_onnx

    return predict_onnx(onnx_session(path), x, INPUT_NAME, OUTPUT_NAME, batch_size=batch)


def _onnx_server(address: str, model: str, version: int, x: np.ndarray, batch: int) -> np.ndarray:
    from cnnserve.client import CnnserveClient

    out = []
    with CnnserveClient(address) as client:
        for i in range(0, len(x), batch):
            out.append(client.infer(model, {INPUT_NAME: x[i : i + batch]}, version=str(version))[OUTPUT_NAME])
    return np.concatenate(out)


def evaluate_served(
    name: str,
    repository: str | Path = "models",
    version: int = 1,
    data_path: str | Path | None = None,
    server: str | None = None,
    heldout_only: bool = True,
    limit: int | None = None,
) -> dict:
    """Accuracy of ``repository/name/version`` on ``data_path`` (default: the data it was trained on)."""
    from cnnserve.training.train import predict_savedmodel

    variant = get_variant(name)
    vdir = Path(repository) / name / str(version)
    meta_path = vdir / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"No exported model at {vdir}; run `cnnserve export {name}` first")
    meta = json.loads(meta_path.read_text())
    shape = tuple(int(d) for d in meta["input"]["shape"][1:])
    labels = tuple(meta["labels"])
    data_path = meta.get("data", {}).get("path") if data_path is None else data_path
    if data_path is None:
        raise ValueError(f"{meta_path} records no data path; pass --data")
    data = load_dataset(variant.dataset, data_path, input_shape=shape, labels=labels)
    idx = split_dataset(data).heldout if heldout_only else np.arange(len(data.y))
    idx = idx if limit is None else idx[:limit]
    x, y = data.x[idx], data.y[idx]
    batch = max(1, min(int(meta.get("batching", {}).get("max_batch_size", 64)), 64))
    if server:
        onnx_probs, onnx_path = _onnx_server(server, name, version, x, batch), f"server {server} (ONNX)"
    else:
        onnx_probs, onnx_path = _onnx_local(vdir / "model.onnx", x, batch), "onnxruntime (model.onnx)"
    tf_probs = predict_savedmodel(vdir / "model.savedmodel", x)
    onnx_pred, tf_pred = onnx_probs.argmax(1), tf_probs.argmax(1)
    return {
        "variant": name,
        "version": version,
        "data": data.source,
        "subset": "held-out split" if heldout_only else "all samples",
        "samples": int(len(y)),
        "onnx_path": onnx_path,
        "onnx_accuracy": float((onnx_pred == y).mean()),
        "tf_accuracy": float((tf_pred == y).mean()),
        "top1_agreement": float((onnx_pred == tf_pred).mean()),
        "max_abs_diff": float(np.abs(onnx_probs.astype(np.float64) - tf_probs).max()),
    }
