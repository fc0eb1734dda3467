"""onnxruntime sessions: provider choice, a check against the model config, and the batch function."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from cnnserve.autocomplete import ONNX_TO_DATATYPE
from cnnserve.protocol import DATATYPE_TO_NUMPY
from cnnserve.repository import ModelConfigError, ModelSpec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """CUDA was asked for but onnxruntime cannot use it."""


def choose_providers(device: str, allow_cpu_fallback: bool) -> list[str]:
    """Providers for a session; CUDA only when asked for, and then only if present (or fallback allowed)."""
    if device == "cpu":
        return [CPU]
    available = ort.get_available_providers()
    if CUDA in available:
        return [CUDA, CPU]
    if allow_cpu_fallback:
        log.warning("CUDA requested but onnxruntime offers only %s; falling back to CPU", available)
        return [CPU]
    raise ProviderError(
        f"device=cuda but onnxruntime offers only {available}; install onnxruntime-gpu with a matching CUDA, "
        "or pass --allow-cpu-fallback"
    )


class OnnxModel:
    """One onnxruntime session for one model version; ``run`` is the dynamic batcher's batch function."""

    def __init__(
        self, spec: ModelSpec, providers: list[str], intra_op_threads: int = 0, *, allow_spinning: bool = False
    ) -> None:
        if not spec.model_file.is_file():
            raise ModelConfigError(f"{spec.model_file} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # onnxruntime's pool threads busy-wait after each run by default; they then burn the cores the event
        # loop and gRPC threads need between batches. Off, they sleep (see docs/benchmarks.md).
        spin = "1" if allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        try:
            self.session = ort.InferenceSession(str(spec.model_file), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelConfigError(f"{spec.model_file}: onnxruntime cannot load it: {exc}") from exc
        self.spec = spec
        self.providers = self.session.get_providers()
        self._check_signature()
        self.output_names = [o.name for o in spec.outputs]
        log.info("model %s v%s loaded with providers %s", spec.name, spec.version, self.providers)

    def _check_signature(self) -> None:
        """The config must describe the ONNX graph: same names, types and (static) dims."""
        graph = {t.name: t for t in self.session.get_inputs()}
        graph.update({t.name: t for t in self.session.get_outputs()})
        for t in (*self.spec.inputs, *self.spec.outputs):
            node = graph.get(t.name)
            if node is None:
                raise ModelConfigError(
                    f"{self.spec.model_file}: config tensor {t.name!r} is not in the ONNX graph "
                    f"(graph has {sorted(graph)})"
                )
            if ONNX_TO_DATATYPE.get(node.type) != t.datatype:
                raise ModelConfigError(
                    f"{self.spec.model_file}: tensor {t.name!r} is {node.type} in the graph, {t.datatype} in config"
                )
            shape = list(node.shape)[1:] if self.spec.batching else list(node.shape)
            if len(shape) != len(t.dims) or any(
                isinstance(g, int) and d != -1 and g != d for g, d in zip(shape, t.dims, strict=False)
            ):
                raise ModelConfigError(
                    f"{self.spec.model_file}: tensor {t.name!r} has shape {node.shape} in the graph, "
                    f"config dims {list(t.dims)}"
                )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; called from the batcher's executor thread (onnxruntime releases the GIL)."""
        outputs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outputs, strict=True))

    def example_inputs(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zero-filled inputs of one batch size, for warm-up."""
        lead = [batch_size] if self.spec.batching else []
        return {
            t.name: np.zeros(lead + [d if d > 0 else 1 for d in t.dims], dtype=DATATYPE_TO_NUMPY[t.datatype])
            for t in self.spec.inputs
        }
