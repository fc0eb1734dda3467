"""Transport security and access control shared by the server and the explainer sidecar.

- TLS: the server presents ``tls_cert``/``tls_key``; with ``tls_client_ca`` it also requires client
  certificates signed by that CA (mutual TLS).
- Bearer tokens: when tokens are configured, every call except health and reflection must carry
  ``authorization: Bearer <token>``; tokens are compared in constant time. Tokens come from a file (one per
  line) or from the environment, never from requests.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from pathlib import Path

import grpc

from cnnserve.service.rpc import refusing_handler

log = logging.getLogger(__name__)

# Calls that stay open without a token: orchestrators probe health, and reflection describes the API.
OPEN_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


class SecurityConfigError(ValueError):
    """Certificate or token settings that cannot work together."""


def server_credentials(cert: Path | None, key: Path | None, client_ca: Path | None) -> grpc.ServerCredentials | None:
    """TLS credentials for a server port, or None for plaintext (no certificate configured)."""
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key as well")
        return None
    if cert is None or key is None:
        raise SecurityConfigError("TLS needs both tls_cert and tls_key")
    root = Path(client_ca).read_bytes() if client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def load_tokens(token_file: Path | None, tokens: str = "") -> tuple[bytes, ...]:
    """Accepted tokens: lines of ``token_file`` (blank lines and # comments skipped) and comma-separated ``tokens``."""
    found: list[str] = [t.strip() for t in tokens.split(",") if t.strip()]
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise SecurityConfigError(f"token file {str(path)!r} does not exist")
        mode = path.stat().st_mode
        if mode & 0o004:
            log.warning("token file %s is world-readable; chmod 600 it", path)
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return tuple(t.encode() for t in found)


def token_is_valid(header: str | None, tokens: Iterable[bytes]) -> bool:
    """Constant-time check of an ``authorization`` header against every accepted token."""
    if not header or not header.startswith("Bearer "):
        return False
    offered = header[len("Bearer ") :].strip().encode()
    valid = False
    for token in tokens:
        valid |= hmac.compare_digest(offered, token)  # no early exit: time does not depend on which matched
    return valid


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid bearer token, except health and reflection."""

    def __init__(self, tokens: tuple[bytes, ...]) -> None:
        if not tokens:
            raise SecurityConfigError("BearerTokenInterceptor needs at least one token")
        self._tokens = tokens

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in OPEN_METHODS:
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization")
        if token_is_valid(header, self._tokens):
            return handler
        reason = "missing bearer token" if not header else "invalid bearer token"
        return refusing_handler(
            handler, grpc.StatusCode.UNAUTHENTICATED, f"{reason}: send metadata 'authorization: Bearer <token>'"
        )


def interceptors(token_file: Path | None, tokens: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server needs for these settings (none when no token is configured)."""
    accepted = load_tokens(token_file, tokens)
    return [BearerTokenInterceptor(accepted)] if accepted else []
