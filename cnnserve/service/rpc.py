"""The one place where a servicer call's outcome becomes a gRPC status, for the server and the sidecar alike.

    class InferenceServicer(...):
        @rpc
        async def ModelInfer(self, request, context): ...

A ServingError is answered with its own code and message; any other exception is logged in full and
answered INTERNAL with a request id, never with its text. Every outcome is counted in ``self.metrics``
under the method's name.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

import grpc

from cnnserve.service.errors import ServingError

log = logging.getLogger(__name__)


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline in event-loop time, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def failure(method: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call is answered with (an unexpected one is logged here)."""
    if isinstance(exc, ServingError):
        return exc.code, exc.message
    request_id = uuid.uuid4().hex[:12]
    log.error("%s failed unexpectedly (request id %s)", method, request_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error; request id {request_id} is in the server log"


def rpc(handler):
    """Wrap a unary servicer method ``async def Name(self, request, context)``: statuses and counts."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self, request, context):
        try:
            result = await handler(self, request, context)
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            self.metrics.request(method, "CANCELLED")
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = failure(method, exc)
            self.metrics.request(method, code.name)
            await context.abort(code, message)
        self.metrics.request(method, "OK")
        return result

    return call


def refusing_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind (unary/stream) as ``handler`` that answers ``code`` without running it."""

    async def refuse(request_or_iterator, context):
        await context.abort(code, message)

    async def refuse_stream(request_or_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **kw)
