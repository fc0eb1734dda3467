"""Server-wide settings, read once at start from arguments and CNNSERVE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cnnserve.protocol import MAX_MESSAGE_BYTES


class ServerSettings(BaseSettings):
    """Settings of `cnnserve serve`. Every field can be set as CNNSERVE_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="CNNSERVE_", extra="forbid")

    model_repository: Path = Field(Path("models"), description="Triton-layout model repository to serve.")
    host: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(8002, ge=-1, le=65535, description="Prometheus port; 0 picks one, -1 disables.")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, gt=0, description="Largest gRPC message in/out.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="onnxruntime execution provider to use.")
    allow_cpu_fallback: bool = Field(False, description="With device=cuda: start on CPU if CUDA is missing.")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per session; 0 = its default.")
    max_queue_size: int = Field(1024, gt=0, description="Per-model queue bound in samples (config may override).")
    batching: bool = Field(True, description="Dynamic batching; off runs every request alone.")
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
    grace_seconds: float = Field(10.0, ge=0, description="How long SIGTERM waits for in-flight requests.")
    explainer_address: str = Field("127.0.0.1:8011", description="The explainer sidecar's gRPC address.")
    tls_cert: Path | None = Field(None, description="PEM certificate chain; with tls_key, serve TLS only.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA; when set, clients must present certificates it signed (mTLS)."
    )
    auth_token_file: Path | None = Field(None, description="File of accepted bearer tokens, one per line.")
    auth_tokens: str = Field("", description="Comma-separated accepted bearer tokens (prefer the file or a secret).")
    explainer_tls_ca: Path | None = Field(
        None, description="CA to verify the explainer's TLS certificate; unset: plaintext."
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the gRPC port (SO_REUSEPORT).")
    uvloop: bool = Field(False, description="Run the event loop on uvloop.")
    reuse_port: bool = Field(
        False,
        description="Set SO_REUSEPORT on the gRPC socket; only --workers sets it, so a second server "
        "cannot silently bind a port in use.",
    )
