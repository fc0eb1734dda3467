"""The GPU memory the served sessions need at least, checked against ``--gpu-memory-bytes`` before loading.

A session needs its weights (the ONNX file's size: the initialisers are nearly all of it; an fp16 file is half)
plus the activations of its largest batch: for the node whose activation inputs and outputs are largest per
sample (from onnx's shape inference), that many bytes times ``max_batch_size``, once per concurrent instance.
That is a lower bound (onnxruntime's arena rounds up, cuDNN takes workspaces): when even it does not fit, the
server refuses to start and says by how much, model by model. What the bound misses fails at warm-up, which
runs every batch size before SERVING, so never on a request. Without the ``onnx`` package only the weights are
counted (the report says so).

The check runs on any device when the setting is given, so a GPU deployment can be sized on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cnnserve.repository import ModelSpec

log = logging.getLogger(__name__)

_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # onnx types


class MemoryBudgetError(RuntimeError):
    """The models' sessions cannot fit the configured GPU memory."""


@dataclass(frozen=True)
class SessionNeed:
    name: str
    version: str
    weights: int
    activations_per_sample: int | None  # None: not estimated (no onnx package)
    batch: int
    instances: int

    @property
    def total(self) -> int:
        return self.weights + (self.activations_per_sample or 0) * self.batch * self.instances

    def describe(self) -> str:
        if self.activations_per_sample is None:
            return f"{self.name} v{self.version}: {_size(self.weights)} weights (activations not estimated)"
        copies = f" x {self.instances} instances" if self.instances > 1 else ""
        return (
            f"{self.name} v{self.version}: {_size(self.weights)} weights + batch {self.batch} x "
            f"{_size(self.activations_per_sample)} activations{copies} = {_size(self.total)}"
        )


_cache: dict[tuple, int | None] = {}


def session_need(spec: ModelSpec) -> SessionNeed:
    path = spec.model_file
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        _cache[key] = peak_activation_bytes(path)
    return SessionNeed(
        spec.name, spec.version, st.st_size, _cache[key], max(spec.max_batch_size, 1), max(spec.instances, 1)
    )


def peak_activation_bytes(path: Path) -> int | None:
    """Per sample, the largest sum of one node's activation inputs and outputs (weights excluded)."""
    try:
        import onnx
    except ImportError:
        log.warning("the onnx package is not installed: GPU memory needs count the weights only")
        return None
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    per_sample: dict[str, int] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if not dims or tensor.elem_type not in _ELEMENT_BYTES:
            continue
        if dims[0] is None:  # the batch dimension
            dims = dims[1:]
        if any(d is None for d in dims):
            continue
        size = _ELEMENT_BYTES[tensor.elem_type]
        for d in dims:
            size *= d
        per_sample[value.name] = size
    peak = 0
    for node in graph.node:
        live = sum(per_sample.get(t, 0) for t in (*node.input, *node.output) if t and t not in weights)
        peak = max(peak, live)
    return peak


def check_fit(needs: list[SessionNeed], budget: int, what: str = "the models") -> None:
    """MemoryBudgetError with every session's numbers when ``needs`` do not fit ``budget`` bytes."""
    total = sum(n.total for n in needs)
    if total > budget:
        lines = "; ".join(n.describe() for n in sorted(needs, key=lambda n: -n.total))
        raise MemoryBudgetError(
            f"{what} need at least {_size(total)} of GPU memory, more than --gpu-memory-bytes {_size(budget)} "
            f"({budget} bytes) by {_size(total - budget)}: {lines}"
        )
    log.info("GPU memory: %s need at least %s of %s", what, _size(total), _size(budget))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
