"""What every gRPC servicer of the server and the sidecar shares: handler failures turned into statuses, deadlines."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from cnnserve.service.errors import ServingError

log = logging.getLogger(__name__)
T = TypeVar("T")


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline in event-loop time, or None when it set none."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def guarded(context: grpc.aio.ServicerContext, method: str, metrics, call: Callable[[], Awaitable[T]]) -> T:
    """Run a handler; map ServingError to its status, anything else to INTERNAL with a request id."""
    try:
        result = await call()
    except ServingError as exc:
        metrics.request(method, exc.code.name)
        await context.abort(exc.code, exc.message)
        raise  # unreachable: abort raises
    except asyncio.CancelledError:  # the caller went away or its deadline passed
        metrics.request(method, "CANCELLED")
        raise
    except grpc.aio.AbortError:
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
