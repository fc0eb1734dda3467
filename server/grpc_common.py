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
