"""The one place where serving failures get their gRPC status codes.

Handlers raise these plain exceptions; the transport layer (``cnnserve.service.rpc.rpc``) turns them into
``context.abort(code, message)``. Messages say what was received and what was expected, so the caller can
fix the request without reading server logs.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base class: an expected failure with a status code chosen for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    """Bad shape, datatype, byte count, parameter or image."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    """Unknown model, version, input or output name."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServingError):
    """The batcher's queue is full, or a message is too large."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    """Not ready yet, shutting down, model unloaded, or the explainer sidecar is unreachable."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServingError):
    """The request's deadline passed before its batch ran."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServingError):
    """The caller went away before its batch ran."""

    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(ServingError):
    """The request is well-formed but the model cannot answer it (e.g. Classify on a model without metadata)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
