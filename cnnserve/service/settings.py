"""The settings both gRPC processes have: where they listen, what they accept, how they shut down, who may call.

Each process subclasses it with its own environment prefix, defaults and fields (``cnnserve.server.settings``,
``cnnserve.explainer.settings``); settings are read once at start, from arguments over the environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from cnnserve.protocol import MAX_MESSAGE_BYTES


class ServiceSettings(BaseSettings):
    model_repository: Path = Field(Path("models"), description="Triton-layout model repository.")
    host: str = Field("0.0.0.0", description="Address the gRPC server binds.")
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, gt=0, description="Largest gRPC message in/out.")
    grace_seconds: float = Field(10.0, ge=0, description="How long SIGTERM waits for in-flight requests.")
    # Access (cnnserve.service.access): health and reflection stay open.
    tls_cert: Path | None = Field(None, description="PEM certificate chain; with tls_key, serve TLS only.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA; when set, clients must present certificates it signed (mutual TLS)."
    )
    auth_token_file: Path | None = Field(None, description="File of accepted bearer tokens, one per line.")
    auth_tokens: str = Field("", description="Comma-separated accepted bearer tokens (prefer the file or a secret).")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The options every service command has (defaults from the settings class that calls it)."""
        default = {name: field.default for name, field in cls.model_fields.items()}
        env_prefix = cls.model_config["env_prefix"]
        parser.add_argument("--model-repository", type=Path, help="Triton-layout model repository (default: models)")
        parser.add_argument("--host", help=f"bind address (default {default['host']})")
        parser.add_argument("--grpc-port", type=int, help=f"gRPC port (default {default['grpc_port']}; 0 picks one)")
        parser.add_argument("--max-message-bytes", type=int, help="largest gRPC message (default 64 MiB)")
        parser.add_argument(
            "--grace-seconds", type=float, help=f"SIGTERM grace period (default {default['grace_seconds']:g})"
        )
        parser.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS (with --tls-key)")
        parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
        parser.add_argument(
            "--tls-client-ca", type=Path, help="require client certificates signed by this CA (mutual TLS)"
        )
        parser.add_argument(
            "--auth-token-file", type=Path, help=f"accepted bearer tokens, one per line ({env_prefix}AUTH_TOKENS also)"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The command's options that were given, over the environment and the defaults."""
        return cls(**{k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None})
