"""What every servicer shares: turning handler failures into gRPC statuses, and deadlines."""

from __future__ import annotations

import asyncio
import inspect
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


class DrainGate:
    """Once ``draining`` is set, new calls to gated servicers are refused with UNAVAILABLE.

    Used at shutdown before the gRPC server stops: callers get a clear, retryable answer instead of a call
    cancelled by the transport while it closes. Applied by wrapping each servicer (``gate``) rather than as a
    server interceptor: a grpc.aio interceptor, even one that only awaits its continuation, cost about 12 %
    of the transport's request rate on every call (docs/benchmarks.md). Health and reflection stay ungated.
    """

    MESSAGE = "server is shutting down; retry on another replica"

    def __init__(self) -> None:
        self.draining = False

    def gate(self, servicer: T) -> T:
        """A stand-in for ``servicer`` whose RPC methods refuse new calls once draining."""
        return _Gated(servicer, self)  # type: ignore[return-value]


class _Gated:
    def __init__(self, servicer: object, gate: DrainGate) -> None:
        self._servicer = servicer
        self._gate = gate

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)
        gate = self._gate
        if inspect.isasyncgenfunction(method):

            async def gated_stream(request_or_iterator, context):
                if gate.draining:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, DrainGate.MESSAGE)
                stream = method(request_or_iterator, context)
                try:
                    async for item in stream:
                        yield item
                finally:
                    await stream.aclose()

            return gated_stream
        if inspect.iscoroutinefunction(method):

            async def gated(request_or_iterator, context):
                if gate.draining:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, DrainGate.MESSAGE)
                return await method(request_or_iterator, context)

            return gated
        return method
