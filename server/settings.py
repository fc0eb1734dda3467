"""Settings of `cnnserve serve`, read once at start from arguments and CNNSERVE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from cnnserve.service.settings import ServiceSettings


class ServerSettings(ServiceSettings):
    """Settings of `cnnserve serve`. Every field can be set as CNNSERVE_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="CNNSERVE_", extra="forbid")

    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    http_port: int = Field(
        8000, ge=-1, le=65535, description="HTTP port (KServe v2 REST); 0 picks a free port, -1 disables."
    )
    http_request_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may take to arrive whole (headers and body); then 408."
    )
    http_keepalive_timeout: float = Field(60.0, gt=0, description="Seconds an idle HTTP connection stays open.")
    metrics_port: int = Field(8002, ge=-1, le=65535, description="Prometheus port; 0 picks one, -1 disables.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="onnxruntime execution provider to use.")
    allow_cpu_fallback: bool = Field(False, description="With device=cuda: start on CPU if CUDA is missing.")
    # CUDA provider options (device=cuda only; a model's config.pbtxt parameters override them, see
    # cnnserve.server.providers).
    cuda_device_id: int = Field(0, ge=0, description="CUDA device of every session (instance_group gpus wins).")
    cuda_mem_limit: int = Field(
        0, ge=0, description="onnxruntime's CUDA memory arena cap per session in bytes (gpu_mem_limit); 0: none."
    )
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kNextPowerOfTwo", description="How the CUDA memory arena grows (arena_extend_strategy)."
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE", description="cuDNN convolution algorithm search, once per shape (at warm-up)."
    )
    cuda_graphs: bool = Field(
        False, description="Capture a CUDA graph per batch size at warm-up and replay it (needs I/O binding)."
    )
    tensorrt: bool = Field(False, description="Put onnxruntime's TensorRT provider before CUDA (off by default).")
    gpu_memory_bytes: int = Field(
        0,
        ge=0,
        description="GPU memory the sessions may take; the server refuses to start, with the numbers, when the "
        "models need more (weights + largest batch's activations, a lower bound). 0: not checked.",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="Feed batches through device buffers bound per batch size; auto: on with CUDA only."
    )
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per session; 0 = its default.")
    max_queue_size: int = Field(1024, gt=0, description="Per-model queue bound in samples (config may override).")
    batching: bool = Field(True, description="Dynamic batching; off runs every request alone.")
    auto_complete_max_batch_size: int = Field(
        4,
        ge=0,
        description="max_batch_size given to a model whose config is completed from its ONNX graph (a bare "
        "VERSION/model.onnx folder) when the graph's first dimension is dynamic; 0 serves it unbatched. "
        "4 is Triton's default-max-batch-size.",
    )
    warmup: bool = Field(True, description="Run every batch size once before reporting ready.")
    repository_poll_seconds: float = Field(
        0.0, ge=0, description="Poll the repository for new, changed or removed models every N s; 0 = off."
    )
    max_concurrent_calls: int = Field(
        0,
        ge=0,
        description="Admission limit: inference, Classify and explainer calls served at once; one more is "
        "refused with RESOURCE_EXHAUSTED. 0 = what the served models' queues can hold (at least 1024).",
    )
    max_pending_calls: int = Field(
        65536,
        gt=0,
        description="Calls gRPC core may hold before the server picks them up (gRPC's own default is 1,000 to "
        "3,000, past which it cancels calls silently); the admission limit then answers each one.",
    )
    explainer_address: str = Field("127.0.0.1:8011", description="The explainer sidecar's gRPC address.")
    explainer_tls_ca: Path | None = Field(
        None, description="CA to verify the explainer's TLS certificate; unset: plaintext."
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the gRPC and HTTP ports (SO_REUSEPORT).")
    worker_restarts_per_minute: int = Field(
        5,
        ge=0,
        description="With workers > 1: exited workers are restarted (with backoff); more exits than this "
        "within a minute stop the server with a non-zero status.",
    )
    metrics_host: str = Field("", description="Address the metrics endpoint binds; empty: host.")
    uvloop: bool = Field(False, description="Run the event loop on uvloop.")
    reuse_port: bool = Field(
        False,
        description="Set SO_REUSEPORT on the gRPC and HTTP sockets; only --workers sets it, so a second server "
        "cannot silently bind a port in use.",
    )
