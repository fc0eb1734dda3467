"""What every servicer shares: turning handler failures into gRPC statuses, and deadlines."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from cnnserve.server.errors import ServingError
from cnnserve.server.metrics import ServerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline in event-loop time, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def guarded(
    context: grpc.aio.ServicerContext, method: str, metrics: ServerMetrics, call: Callable[[], Awaitable[T]]
) -> T:
    """Run a handler; map ServingError to its status, anything else to INTERNAL with a request id."""
    try:
        result = await call()
    except ServingError as exc:
        metrics.request(method, exc.code.name)
        await context.abort(exc.code, exc.message)
        raise  # unreachable: abort raises
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception:
        request_id = uuid.uuid4().hex[:12]
        log.exception("%s failed unexpectedly (request id %s)", method, request_id)
        metrics.request(method, "INTERNAL")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {request_id} is in the server log")
        raise
    metrics.request(method, "OK")
    return result


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


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Once ``draining`` is set, new calls (but health and reflection) are refused with UNAVAILABLE.

    Used at shutdown before the gRPC server stops: callers get a clear, retryable answer instead of a call
    cancelled by the transport while it closes.
    """

    def __init__(self, open_methods: frozenset[str]) -> None:
        self.draining = False
        self._open = open_methods

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if not self.draining or handler is None or handler_call_details.method in self._open:
            return handler
        return refusing_handler(
            handler, grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another replica"
        )
