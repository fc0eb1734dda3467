"""Execution providers and their options: the server's settings first, then each model's config.pbtxt.

A :class:`ProviderPlan` says what every session of the server runs on (CPU, CUDA, TensorRT in front of
CUDA) with which onnxruntime provider options; ``plan.for_model(spec)`` applies a model's own Triton
parameters on top. Everything that cannot work fails here, at start, with the reason: CUDA or TensorRT
asked for but missing from the installed onnxruntime, CUDA options on a CPU server, values onnxruntime
does not know, parameters cnnserve does not read.

Triton's onnxruntime backend keys read from ``parameters { key: ... value: { string_value: ... } }``:
``cudnn_conv_algo_search`` (0 EXHAUSTIVE, 1 HEURISTIC, 2 DEFAULT), ``gpu_mem_limit`` (bytes),
``arena_extend_strategy`` (0 kNextPowerOfTwo, 1 kSameAsRequested) and ``intra_op_thread_count``; the GPU
of ``instance_group [ { kind: KIND_GPU gpus: [ N ] } ]``; the TensorRT provider from ``optimization {
execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" parameters { key: "precision_mode"
value: "FP16" } } ] } }`` (and ``max_workspace_size_bytes``). ``enable_cuda_graph`` (0/1) is cnnserve's own
key, named as onnxruntime's CUDA option. On a CPU server the CUDA keys are checked and then not used, so
one repository serves on both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cnnserve.repository import ModelConfigError, ModelSpec

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # Triton's "0", "1", "2"
ARENA_EXTEND = ("kNextPowerOfTwo", "kSameAsRequested")  # Triton's "0", "1"
# Settings that only mean something with device=cuda (ServerSettings field names).
CUDA_SETTINGS = (
    "cuda_device_id",
    "cuda_mem_limit",
    "cuda_arena_extend_strategy",
    "cudnn_conv_algo_search",
    "cuda_graphs",
    "tensorrt",
)
MODEL_PARAMETERS = (
    "intra_op_thread_count",
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "enable_cuda_graph",
)


class ProviderError(RuntimeError):
    """An execution provider or option was asked for that the installed onnxruntime cannot give."""


@dataclass(frozen=True)
class CudaOptions:
    """onnxruntime's CUDA provider options cnnserve sets (the rest keep onnxruntime's defaults)."""

    device_id: int = 0
    mem_limit: int = 0  # gpu_mem_limit: the session's arena cap in bytes; 0: none
    arena_extend_strategy: str = "kNextPowerOfTwo"
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_graph: bool = False

    def provider_options(self) -> dict[str, str]:
        options = {
            "device_id": str(self.device_id),
            "arena_extend_strategy": self.arena_extend_strategy,
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "enable_cuda_graph": "1" if self.cuda_graph else "0",
        }
        if self.mem_limit:
            options["gpu_mem_limit"] = str(self.mem_limit)
        return options


@dataclass(frozen=True)
class ProviderPlan:
    """The providers of a session and how its batches are fed (I/O binding)."""

    device: str = "cpu"  # "cpu" or "cuda": where sessions run, after any fallback
    cuda: CudaOptions = CudaOptions()
    tensorrt: bool = False
    io_binding: bool = False
    tensorrt_options: tuple[tuple[str, str], ...] = ()  # from a model's TensorRT accelerator parameters
    available: tuple[str, ...] = ()  # what the installed onnxruntime offers

    @property
    def device_id(self) -> int:
        return self.cuda.device_id if self.device == "cuda" else 0

    @property
    def cuda_graph(self) -> bool:
        return self.device == "cuda" and self.cuda.cuda_graph

    def providers(self) -> list:
        """What ``onnxruntime.InferenceSession(providers=...)`` takes: names with their options."""
        if self.device == "cpu":
            return [CPU]
        chain: list = []
        if self.tensorrt:
            chain.append((TENSORRT, {"device_id": str(self.cuda.device_id), **dict(self.tensorrt_options)}))
        chain.append((CUDA, self.cuda.provider_options()))
        chain.append(CPU)
        return chain

    def provider_names(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in self.providers()]

    def for_model(self, spec: ModelSpec) -> ProviderPlan:
        """This plan with the model's own Triton parameters and GPU applied; ModelConfigError when they are wrong."""
        source = spec.path.parent / "config.pbtxt"
        params = {key: value.string_value.strip() for key, value in spec.config.parameters.items()}
        unknown = sorted(set(params) - set(MODEL_PARAMETERS))
        if unknown:
            raise ModelConfigError(
                f"{source}: parameters {unknown} are not read by cnnserve; it reads {list(MODEL_PARAMETERS)}"
            )
        cuda = self.cuda
        if "cudnn_conv_algo_search" in params:
            value = _choice(params["cudnn_conv_algo_search"], ALGO_SEARCH, "cudnn_conv_algo_search", source)
            cuda = replace(cuda, cudnn_conv_algo_search=value)
        if "arena_extend_strategy" in params:
            value = _choice(params["arena_extend_strategy"], ARENA_EXTEND, "arena_extend_strategy", source)
            cuda = replace(cuda, arena_extend_strategy=value)
        if "gpu_mem_limit" in params:
            cuda = replace(cuda, mem_limit=_non_negative(params["gpu_mem_limit"], "gpu_mem_limit", source))
        if "enable_cuda_graph" in params:
            cuda = replace(cuda, cuda_graph=_flag(params["enable_cuda_graph"], "enable_cuda_graph", source))
        gpus = sorted({gpu for group in spec.config.instance_group for gpu in group.gpus})
        if len(gpus) > 1:
            raise ModelConfigError(f"{source}: instance_group names GPUs {gpus}; cnnserve serves a model on one GPU")
        if gpus:
            cuda = replace(cuda, device_id=gpus[0])
        trt = _tensorrt_accelerator(spec, source)
        if self.device == "cpu":
            return self  # checked above; the CUDA keys mean nothing on a CPU server
        if cuda.cuda_graph and not self.io_binding:
            raise ModelConfigError(f"{source}: enable_cuda_graph needs I/O binding (the server runs with it off)")
        plan = replace(self, cuda=cuda)
        if trt is not None:
            if TENSORRT not in self.available:
                raise ModelConfigError(
                    f"{source}: asks for the TensorRT accelerator but onnxruntime offers only {list(self.available)}"
                )
            plan = replace(plan, tensorrt=True, tensorrt_options=trt)
        if plan.tensorrt and cuda.cuda_graph:
            raise ModelConfigError(f"{source}: CUDA graphs and the TensorRT accelerator together are not supported")
        return plan


def plan_providers(settings, available: Iterable[str] | None = None) -> ProviderPlan:
    """The server-wide plan from ``ServerSettings``; ProviderError when the installed onnxruntime cannot give it.

    ``available`` defaults to ``onnxruntime.get_available_providers()`` (tests pass their own).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if settings.device == "cuda" and CUDA in available and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* wheels (as PyTorch installs them) rather than the system's.
            try:
                ort.preload_dlls()
            except Exception as exc:  # a system CUDA may still be found by the provider itself
                log.warning("onnxruntime.preload_dlls() failed: %s", exc)
    available = list(available)
    fields = type(settings).model_fields
    given = sorted(  # options changed from their defaults (a worker process gets every field set, so not "set")
        f"--{name.replace('_', '-')}" for name in CUDA_SETTINGS if getattr(settings, name) != fields[name].default
    )
    io_binding = {"on": True, "off": False}.get(settings.io_binding, settings.device == "cuda")
    if settings.device == "cpu":
        if given:
            raise ProviderError(f"{', '.join(given)} apply to --device cuda only; this server runs with --device cpu")
        return ProviderPlan("cpu", io_binding=io_binding, available=tuple(available))
    if CUDA not in available:
        if not settings.allow_cpu_fallback:
            raise ProviderError(
                f"device=cuda but onnxruntime offers only {available}; install onnxruntime-gpu with a matching "
                "CUDA, or pass --allow-cpu-fallback"
            )
        log.warning("CUDA requested but onnxruntime offers only %s; falling back to CPU", available)
        if given:
            log.warning("%s are not used on the CPU", ", ".join(given))
        return ProviderPlan("cpu", io_binding=settings.io_binding == "on", available=tuple(available))
    if settings.tensorrt and TENSORRT not in available:
        raise ProviderError(
            f"--tensorrt but onnxruntime offers only {available}; install an onnxruntime-gpu built with TensorRT "
            "and TensorRT's libraries, or leave it off"
        )
    if settings.cuda_graphs and settings.tensorrt:
        raise ProviderError("--cuda-graphs and --tensorrt together are not supported; choose one")
    if settings.cuda_graphs and not io_binding:
        raise ProviderError("--cuda-graphs needs I/O binding (fixed device buffers); drop --io-binding off")
    cuda = CudaOptions(
        device_id=settings.cuda_device_id,
        mem_limit=settings.cuda_mem_limit,
        arena_extend_strategy=settings.cuda_arena_extend_strategy,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
        cuda_graph=settings.cuda_graphs,
    )
    return ProviderPlan("cuda", cuda, tensorrt=settings.tensorrt, io_binding=io_binding, available=tuple(available))


# Triton's TensorRT accelerator parameters -> onnxruntime's TensorRT provider options.
TENSORRT_PARAMETERS = {"precision_mode": "trt_fp16_enable", "max_workspace_size_bytes": "trt_max_workspace_size"}


def _tensorrt_accelerator(spec: ModelSpec, source) -> tuple[tuple[str, str], ...] | None:
    """``optimization { execution_accelerators { gpu_execution_accelerator [ { name: "tensorrt" ... } ] } }``:
    the TensorRT provider's options, or None when the model asks for no accelerator."""
    accelerators = spec.config.optimization.execution_accelerators
    if accelerators.cpu_execution_accelerator:
        names = [a.name for a in accelerators.cpu_execution_accelerator]
        raise ModelConfigError(f"{source}: cpu_execution_accelerator {names} is not served by cnnserve")
    options = None
    for accelerator in accelerators.gpu_execution_accelerator:
        if accelerator.name != "tensorrt":
            raise ModelConfigError(
                f"{source}: gpu_execution_accelerator {accelerator.name!r} is not served; cnnserve knows 'tensorrt'"
            )
        options = []
        for key, value in sorted(accelerator.parameters.items()):
            if key not in TENSORRT_PARAMETERS:
                raise ModelConfigError(
                    f"{source}: TensorRT parameter {key!r} is not read; cnnserve reads {list(TENSORRT_PARAMETERS)}"
                )
            if key == "precision_mode":
                if value not in ("FP32", "FP16"):
                    raise ModelConfigError(f"{source}: TensorRT precision_mode is {value!r}; expected FP32 or FP16")
                value = "True" if value == "FP16" else "False"
            else:
                value = str(_non_negative(value, key, source))
            options.append((TENSORRT_PARAMETERS[key], value))
    return tuple(options) if options is not None else None


def _choice(text: str, names: tuple[str, ...], key: str, source) -> str:
    """Triton's number ("0") or onnxruntime's name ("EXHAUSTIVE") of an enumerated option."""
    if text.isdigit() and int(text) < len(names):
        return names[int(text)]
    if text in names:
        return text
    allowed = ", ".join(f"{i} ({name})" for i, name in enumerate(names))
    raise ModelConfigError(f"{source}: parameter {key!r} is {text!r}; expected one of {allowed}")


def _non_negative(text: str, key: str, source) -> int:
    if not text.isdigit():
        raise ModelConfigError(f"{source}: parameter {key!r} must be a non-negative integer (bytes), got {text!r}")
    return int(text)


def _flag(text: str, key: str, source) -> bool:
    value = text.lower()
    if value not in {"0", "1", "true", "false"}:
        raise ModelConfigError(f"{source}: parameter {key!r} must be 0 or 1, got {text!r}")
    return value in {"1", "true"}
