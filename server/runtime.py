"""onnxruntime sessions: provider choice, a check against the model config, and the batch function."""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext

import numpy as np
import onnxruntime as ort

from cnnserve.autocomplete import ONNX_TO_DATATYPE
from cnnserve.protocol import DATATYPE_TO_NUMPY
from cnnserve.repository import ModelConfigError, ModelSpec
from cnnserve.server.providers import CPU, CUDA, ProviderError, ProviderPlan

log = logging.getLogger(__name__)

__all__ = ["CPU", "CUDA", "ONNX_TO_DATATYPE", "OnnxModel", "ProviderError", "choose_providers"]


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


class _Binding:
    """One set of buffers on the session's device for one batch shape, bound to its inputs and outputs.

    Outputs whose dims are all known are preallocated too (CUDA graphs need every address fixed); others
    are bound by device and onnxruntime allocates them per run.
    """

    def __init__(self, session, spec: ModelSpec, shapes: dict[str, tuple], device: str, device_id: int, graph_id):
        self.io = session.io_binding()
        self.inputs: dict[str, ort.OrtValue] = {}
        for name, shape in shapes.items():
            dtype = DATATYPE_TO_NUMPY[next(t.datatype for t in spec.inputs if t.name == name)]
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, device, device_id)
            self.io.bind_ortvalue_input(name, value)
            self.inputs[name] = value
        batch = [next(iter(shapes.values()))[0]] if spec.batching else []
        self.outputs: dict[str, ort.OrtValue | None] = {}
        for t in spec.outputs:
            if all(d > 0 for d in t.dims):
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    batch + list(t.dims), DATATYPE_TO_NUMPY[t.datatype], device, device_id
                )
                self.io.bind_ortvalue_output(t.name, value)
                self.outputs[t.name] = value
            else:
                self.io.bind_output(t.name, device, device_id)
                self.outputs[t.name] = None
        self.on_host = device == "cpu"
        self.run_options = ort.RunOptions()
        if graph_id is not None:
            self.run_options.add_run_config_entry("gpu_graph_id", str(graph_id))

    def results(self, names: list[str]) -> list[np.ndarray]:
        """The outputs as host arrays of their own (a CPU buffer is reused by the next batch: copied)."""
        allocated = None
        out = []
        for name in names:
            value = self.outputs[name]
            if value is None:
                allocated = allocated or dict(zip(self.outputs, self.io.get_outputs(), strict=True))
                value = allocated[name]
                out.append(value.numpy())
            else:
                out.append(value.numpy().copy() if self.on_host else value.numpy())
        return out


class OnnxModel:
    """One onnxruntime session for one model version; ``run`` is the dynamic batcher's batch function."""

    def __init__(
        self,
        spec: ModelSpec,
        providers: list | ProviderPlan,
        intra_op_threads: int = 0,
        *,
        allow_spinning: bool = False,
    ) -> None:
        plan = providers if isinstance(providers, ProviderPlan) else None
        if plan is not None:
            providers = plan.providers()
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
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        if CUDA in wanted and CUDA not in self.providers:
            raise ProviderError(
                f"model {spec.name} v{spec.version}: the CUDA provider was asked for but the session runs on "
                f"{self.providers} (onnxruntime could not load CUDA or cuDNN; its log above says why)"
            )
        self._check_signature()
        self.output_names = [o.name for o in spec.outputs]
        # I/O binding: one set of buffers per batch shape, made at its first batch (warm-up makes them all).
        self.io_binding = bool(plan and plan.io_binding)
        self.cuda_graph = bool(plan and plan.cuda_graph)
        self._device = "cuda" if plan is not None and plan.device == "cuda" else "cpu"
        self._device_id = plan.device_id if plan is not None else 0
        self._free: dict[tuple, list[_Binding]] = {}
        self._graph_ids: dict[tuple, int] = {}
        self._pool_lock = threading.Lock()
        # A CUDA graph replays on fixed buffers and one stream: its batches run one at a time.
        self._graph_lock = threading.Lock() if self.cuda_graph else nullcontext()
        self.bindings_made: dict[tuple, int] = {}
        log.info(
            "model %s v%s loaded with providers %s%s%s",
            spec.name,
            spec.version,
            self.providers,
            ", I/O binding" if self.io_binding else "",
            ", CUDA graphs" if self.cuda_graph else "",
        )

    @property
    def warmup_runs(self) -> int:
        """Runs per batch size at warm-up: onnxruntime captures a CUDA graph after a few plain runs."""
        return 3 if self.cuda_graph else 1

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
        if not self.io_binding:
            outputs = self.session.run(self.output_names, inputs)
            return dict(zip(self.output_names, outputs, strict=True))
        key = tuple((name, tuple(value.shape)) for name, value in inputs.items())
        with self._graph_lock:
            binding = self._acquire(key)
            try:
                for name, value in inputs.items():
                    binding.inputs[name].update_inplace(np.ascontiguousarray(value))
                self.session.run_with_iobinding(binding.io, binding.run_options)
                outputs = binding.results(self.output_names)
            finally:
                with self._pool_lock:
                    self._free[key].append(binding)
        return dict(zip(self.output_names, outputs, strict=True))

    def _acquire(self, key: tuple) -> _Binding:
        """A free binding of this shape, or a new one (CUDA graphs: one per shape, with its graph id)."""
        with self._pool_lock:
            free = self._free.setdefault(key, [])
            if free:
                return free.pop()
            self.bindings_made[key] = self.bindings_made.get(key, 0) + 1
            graph_id = self._graph_ids.setdefault(key, len(self._graph_ids)) if self.cuda_graph else None
        return _Binding(self.session, self.spec, dict(key), self._device, self._device_id, graph_id)

    def example_inputs(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zero-filled inputs of one batch size, for warm-up."""
        lead = [batch_size] if self.spec.batching else []
        return {
            t.name: np.zeros(lead + [d if d > 0 else 1 for d in t.dims], dtype=DATATYPE_TO_NUMPY[t.datatype])
            for t in self.spec.inputs
        }
