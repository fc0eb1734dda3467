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


class Servicer:
    """What the wrappers read from a servicer: ``metrics`` (request counts) and ``admission``.

    ``admission`` (None: every call may run) decides whether a call may start: ``enter(method)`` returns None
    or the (code, message) it is refused with, ``leave(method)`` when an admitted call ends. The server's
    AdmissionGate (drain gate and admission limit) is one; checking it here, in the wrapper every call passes
    anyway, costs a call no frame of its own.
    """

    admission = None
    metrics = None


def rpc(handler=None, *, counted: bool = True):
    """Wrap a unary servicer method ``async def Name(self, request, context)``: admission, statuses, counts.

    ``counted=False`` (liveness and metadata calls) counts only the calls admission refuses.
    """
    if handler is None:
        return lambda h: rpc(h, counted=counted)
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self, request, context):
        admission = await _admit(self, method, context)
        try:
            result = await handler(self, request, context)
        except asyncio.CancelledError:  # the caller went away or its deadline passed
            if counted:
                self.metrics.request(method, "CANCELLED")
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = failure(method, exc)
            if counted:
                self.metrics.request(method, code.name)
            await context.abort(code, message)
        finally:
            if admission is not None:
                admission.leave(method)
        if counted:
            self.metrics.request(method, "OK")
        return result

    return call


def rpc_stream(handler):
    """Wrap a streaming servicer method (an async generator): admission, and the status of a failed stream.

    The method answers its requests' own failures in the stream; an exception that ends the stream itself is
    answered as a unary call's would be (a ServingError with its code, anything else INTERNAL with a request
    id), and counted.
    """
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self, request_iterator, context):
        admission = await _admit(self, method, context)
        stream = handler(self, request_iterator, context)
        try:
            async for item in stream:
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            code, message = failure(method, exc)
            self.metrics.request(method, code.name)
            await context.abort(code, message)
        finally:
            if admission is not None:
                admission.leave(method)
            await stream.aclose()

    return call


async def _admit(servicer: Servicer, method: str, context):
    """Enter the servicer's admission (aborting the call if it refuses); returns it, to leave when the call ends."""
    admission = servicer.admission
    if admission is not None and (refused := admission.enter(method)) is not None:
        code, message = refused
        servicer.metrics.request(method, code.name)
        await context.abort(code, message)
    return admission


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
