"""The explainer handler of the main server: every explanation call is forwarded to the TensorFlow sidecar.

The main server never imports TensorFlow (nor anything of ``explainer/``); it passes the request
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

from cnnserve._proto.cnnserve.v1 import explainer_pb2_grpc as pb_grpc
from cnnserve.protocol import MAX_MESSAGE_BYTES, channel_credentials, channel_options
from cnnserve.service.errors import ServingError, Unavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 0.5
# A caller without a deadline still gets one on the forwarded call (filter patterns are bounded below this).
DEFAULT_TIMEOUT_S = 600.0


class SidecarError(ServingError):
    """A status the sidecar returned (NOT_FOUND, INVALID_ARGUMENT, ...), passed on unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ExplainerHandler:
    """Forwards cnnserve.v1.Explainer requests (protobuf messages, passed through unchanged) to the sidecar."""

    def __init__(
        self,
        address: str,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.address = address
        # Read once at start: a missing file fails the server's start, not the first explain call.
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key) if tls_ca is not None else None
        self.connect_timeout = connect_timeout
        self._options = channel_options(max_message_bytes)
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

    async def forward(self, method: str, request, *, timeout: float | None, metadata=()):
        """Call ``method`` on the sidecar with the caller's remaining ``timeout`` (seconds, None: no deadline)
        and ``metadata`` (the caller's ``authorization``); the sidecar's answer, or its status as a ServingError."""
        channel, stub = self._connect()
        if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            wait = self.connect_timeout if timeout is None else max(0.0, min(self.connect_timeout, timeout))
            started = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(channel.channel_ready(), wait)
            except TimeoutError:
                self._drop(channel)
                raise self._unreachable(f"no connection within {wait:.1f}s") from None
            except grpc.aio.UsageError:  # a concurrent call gave up on this channel and closed it meanwhile
                raise self._unreachable("no connection") from None
            if timeout is not None:
                timeout -= asyncio.get_running_loop().time() - started
        timeout = DEFAULT_TIMEOUT_S if timeout is None else max(timeout, 0.0)
        try:
            return await getattr(stub, method)(request, timeout=timeout, metadata=metadata, wait_for_ready=False)
        except grpc.aio.UsageError:  # the channel was closed under this call by a concurrent one's failure
            raise self._unreachable("connection lost") from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._drop(channel)
                raise self._unreachable(exc.details() or "connection lost") from None
            raise SidecarError(exc.code(), exc.details() or exc.code().name) from None
