"""cnnserve.v1.Explainer on the main server: every call is forwarded to the TensorFlow sidecar.

The main server never imports TensorFlow (nor anything of ``server/explainer``); it passes the request
bytes through a ``grpc.aio`` channel to ``settings.explainer_address`` with the caller's deadline.
When the sidecar is down the call fails within ``connect_timeout`` with UNAVAILABLE, and the channel is
dropped so the next call dials afresh instead of waiting out gRPC's reconnect backoff: a restarted sidecar
is used again at once. Classification shares nothing with this path.

Access: the caller's ``authorization`` metadata is forwarded, so a sidecar with bearer tokens checks the
caller's token (the main server checks it too when it has tokens of its own). With ``tls_ca`` (the server's
``explainer_tls_ca``) the channel is TLS and the sidecar's certificate must be signed by that CA; the
server's own ``tls_cert``/``tls_key`` are then offered as the client certificate, which a sidecar with
``tls_client_ca`` (mutual TLS) requires, so that certificate must allow client authentication as well
(extended key usage clientAuth, or no extended key usage). Without ``tls_ca`` the channel is plaintext.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from cnnserve._proto.cnnserve.v1 import explainer_pb2 as pb
from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.server.errors import ServingError, Unavailable
from cnnserve.server.grpc_common import guarded
from cnnserve.server.metrics import ServerMetrics
from cnnserve.server.security import channel_credentials

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 0.5
# A caller without a deadline still gets one on the forwarded call (filter patterns are bounded below this).
DEFAULT_TIMEOUT_S = 600.0
FORWARDED_METADATA = frozenset({"authorization"})


class SidecarError(ServingError):
    """A status the sidecar returned (NOT_FOUND, INVALID_ARGUMENT, ...), passed on unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ExplainerProxy(pb_grpc.ExplainerServicer):
    def __init__(
        self,
        address: str,
        metrics: ServerMetrics,
        *,
        max_message_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.address = address
        # Read once at start: a missing file fails the server's start, not the first explain call.
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key) if tls_ca is not None else None
        self.metrics = metrics
        self.connect_timeout = connect_timeout
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.ExplainerStub | None = None
        self._closing: set[asyncio.Task] = set()

    def _connect(self) -> tuple[grpc.aio.Channel, pb_grpc.ExplainerStub]:
        if self._channel is None:  # created lazily, inside the server's event loop
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=self._options)
            self._stub = pb_grpc.ExplainerStub(self._channel)
        return self._channel, self._stub

    def _drop(self, channel: grpc.aio.Channel) -> None:
        """Forget a failed channel (the next call dials afresh); close it once its calls are done."""
        if self._channel is channel:
            self._channel = self._stub = None
            task = asyncio.get_running_loop().create_task(channel.close(grace=5.0))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _unreachable(self, why: str) -> Unavailable:
        return Unavailable(
            f"the explainer sidecar at {self.address} is unreachable ({why}); heatmaps, activations and filter "
            "patterns are unavailable until it is back (classification is not affected)"
        )

    async def _forward(self, method: str, request, context):
        remaining = context.time_remaining()
        channel, stub = self._connect()
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            wait = self.connect_timeout if remaining is None else max(0.0, min(self.connect_timeout, remaining))
            try:
                await asyncio.wait_for(channel.channel_ready(), wait)
            except asyncio.TimeoutError:
                self._drop(channel)
                raise self._unreachable(f"no connection within {wait:.1f}s") from None
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 0.0)
        metadata = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k in FORWARDED_METADATA)
        try:
            return await getattr(stub, method)(request, timeout=timeout, metadata=metadata, wait_for_ready=False)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._drop(channel)
                raise self._unreachable(exc.details() or "connection lost") from None
            raise SidecarError(exc.code(), exc.details() or exc.code().name) from None

    async def Heatmap(self, request: pb.HeatmapRequest, context) -> pb.HeatmapResponse:
        return await guarded(context, "Heatmap", self.metrics, lambda: self._forward("Heatmap", request, context))

    async def Activations(self, request: pb.ActivationsRequest, context) -> pb.ActivationsResponse:
        return await guarded(
            context, "Activations", self.metrics, lambda: self._forward("Activations", request, context)
        )

    async def FilterPatterns(self, request: pb.FilterPatternsRequest, context) -> pb.FilterPatternsResponse:
        return await guarded(
            context, "FilterPatterns", self.metrics, lambda: self._forward("FilterPatterns", request, context)
        )

    async def ListLayers(self, request: pb.ListLayersRequest, context) -> pb.ListLayersResponse:
        return await guarded(context, "ListLayers", self.metrics, lambda: self._forward("ListLayers", request, context))
